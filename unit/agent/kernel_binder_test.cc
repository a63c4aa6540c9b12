// The kernel binder with real threads: jobs sharing a key run in order, one at a time; others
// run beside them; workers wait for the next job, a few at most; stopping cancels the waits.
#include "agent/kernel_binder.h"

#include <absl/strings/str_cat.h>

#include <boost/test/unit_test.hpp>

#include "core/event_queue.h"
#include "core/mutex.h"
#include "udev/discovery.h"
#include "unit/agent/fakes.h"

namespace pcid::agent {
namespace {

using namespace testing;
using namespace std::chrono_literals;

struct BinderFixture {
  AgentFixture node;
  Mutex mu;
  std::vector<std::string> finished ABSL_GUARDED_BY(mu);  // `done` order, on the "owner" thread
  std::shared_ptr<EventQueue> queue = std::make_shared<EventQueue>();
  std::unique_ptr<KernelBinder> binder;

  BinderFixture() {
    binder = std::make_unique<KernelBinder>(
        node.MakeNode(std::chrono::milliseconds(10000)), *vfio::StateStore::Open(node.state.path()),
        [q = queue](std::function<void()> fn) { q->Post(std::move(fn)); });
  }
  std::function<void()> Done(std::string name) {
    return [this, name] {
      MutexLock lock(&mu);
      finished.push_back(name);
    };
  }
  // Runs what the jobs posted until `n` have finished (5 s at most).
  bool WaitFinished(size_t n) {
    for (int i = 0; i < 500; ++i) {
      queue->RunPending();
      {
        MutexLock lock(&mu);
        if (finished.size() >= n) return true;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }
  std::vector<std::string> Finished() {
    MutexLock lock(&mu);
    return finished;
  }
};

BOOST_AUTO_TEST_SUITE(kernel_binder)

BOOST_AUTO_TEST_CASE(a_stuck_job_holds_up_only_its_own_key) {
  BinderFixture f;
  Notification release;
  f.binder->Submit(
      "stuck", {"group:1"},
      [&](const vfio::Node&, vfio::StateStore&, const Post&) { release.WaitForNotification(); },
      f.Done("stuck"));
  f.binder->Submit(
      "same group", {"group:1"}, [](const vfio::Node&, vfio::StateStore&, const Post&) {},
      f.Done("same"));
  f.binder->Submit(
      "other group", {"group:2"}, [](const vfio::Node&, vfio::StateStore&, const Post&) {},
      f.Done("other"));
  BOOST_REQUIRE(f.WaitFinished(1));
  BOOST_TEST((f.Finished() == std::vector<std::string>{"other"}));
  BOOST_TEST(f.binder->waiting() == 1u);  // "same group" waits behind "stuck"
  release.Notify();
  BOOST_REQUIRE(f.WaitFinished(3));
  BOOST_TEST((f.Finished() == std::vector<std::string>{"other", "stuck", "same"}));
  BOOST_TEST(f.binder->running() == 0u);
}

BOOST_AUTO_TEST_CASE(a_later_job_never_overtakes_an_earlier_one_on_a_shared_key) {
  BinderFixture f;
  Notification release;
  f.binder->Submit(
      "a", {"group:1"},
      [&](const vfio::Node&, vfio::StateStore&, const Post&) { release.WaitForNotification(); },
      f.Done("a"));
  // b needs group:1 and group:2; c needs group:2 only but came after b: it waits for b.
  f.binder->Submit(
      "b", {"group:1", "group:2"}, [](const vfio::Node&, vfio::StateStore&, const Post&) {},
      f.Done("b"));
  f.binder->Submit(
      "c", {"group:2"}, [](const vfio::Node&, vfio::StateStore&, const Post&) {}, f.Done("c"));
  std::this_thread::sleep_for(50ms);
  f.queue->RunPending();
  BOOST_TEST(f.Finished().empty());
  release.Notify();
  BOOST_REQUIRE(f.WaitFinished(3));
  BOOST_TEST((f.Finished() == std::vector<std::string>{"a", "b", "c"}));
}

BOOST_AUTO_TEST_CASE(a_worker_runs_the_next_job_and_a_few_stay_waiting) {
  BinderFixture f;
  Mutex mu;
  std::vector<std::thread::id> ran_on;
  auto record = [&](const vfio::Node&, vfio::StateStore&, const Post&) {
    MutexLock lock(&mu);
    ran_on.push_back(std::this_thread::get_id());
  };
  f.binder->Submit("first", {"group:1"}, record, f.Done("first"));
  BOOST_REQUIRE(f.WaitFinished(1));
  f.binder->Submit("second", {"group:2"}, record, f.Done("second"));
  BOOST_REQUIRE(f.WaitFinished(2));
  {
    MutexLock lock(&mu);
    BOOST_TEST(ran_on[0] == ran_on[1]);  // the same thread, no new one
  }
  BOOST_TEST(f.binder->workers() == 1u);
  // Six at once: six workers; afterwards only kIdleWorkers of them stay.
  Notification release;
  for (int i = 0; i < 6; ++i) {
    f.binder->Submit(
        absl::StrCat("blocked ", i), {absl::StrCat("group:", 10 + i)},
        [&](const vfio::Node&, vfio::StateStore&, const Post&) { release.WaitForNotification(); },
        f.Done(absl::StrCat("blocked ", i)));
  }
  for (int i = 0; i < 500 && f.binder->workers() < 6; ++i) std::this_thread::sleep_for(10ms);
  BOOST_TEST(f.binder->workers() == 6u);
  BOOST_TEST(f.binder->running() == 6u);
  release.Notify();
  BOOST_REQUIRE(f.WaitFinished(8));
  for (int i = 0; i < 500 && f.binder->workers() > KernelBinder::kIdleWorkers; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  BOOST_TEST(f.binder->workers() == KernelBinder::kIdleWorkers);
  BOOST_TEST(f.binder->running() == 0u);
}

BOOST_AUTO_TEST_CASE(stopping_cancels_a_bind_the_kernel_never_answers) {
  BinderFixture f;
  // Arriving: drivers_probe does nothing, and the node waits 10 s for the kernel's own probe.
  f.node.kernel.AddArriving(
      {.address = "0000:00:07.0", .device = "0x10d3", .driver = "e1000e", .group = "9"});
  auto dev = *udev::ReadPciDevice(*f.node.sys_root, "0000:00:07.0", nullptr, f.node.log.log);
  Notification started;
  auto result = std::make_shared<absl::Status>();
  f.binder->Submit(
      "enable", {"group:9"},
      [&, dev, result](const vfio::Node& node, vfio::StateStore& store, const Post&) {
        started.Notify();
        *result = vfio::Enable(node, store, dev, {}, "claim");
      },
      nullptr);
  started.WaitForNotification();
  std::this_thread::sleep_for(50ms);
  const auto t0 = std::chrono::steady_clock::now();
  f.binder.reset();
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1s));
  BOOST_TEST(absl::IsCancelled(*result), result->ToString());
  // Cut short, the intent stays (as after a crash): the next start binds it.
  auto store = *vfio::StateStore::Open(f.node.state.path());
  BOOST_TEST(store.Find(*ParsePciAddress("0000:00:07.0")).has_value());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::agent
