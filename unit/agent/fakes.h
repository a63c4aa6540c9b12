// File: unit/agent/fakes.h
//
// Fakes of the reconciler's ports, and a node to run it on: a kernel-shaped fixture tree whose
// driver-binding attributes are modelled (unit/vfio/kernel_model.h), a real intent store in a
// temporary directory, and a binder that runs each kernel job only when the test says so, on
// the test's thread. No processes, no sockets.
#pragma once

#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/ports.h"
#include "agent/reconciler.h"
#include "core/clock.h"
#include "unit/vfio/node_fixture.h"

namespace pcid::agent::testing {

using pcid::testing::CapturingLogger;
using pcid::testing::FunctionSpec;

// Holds kernel jobs until RunNext(); records their keys.
class ManualBinder final : public Binder {
 public:
  ManualBinder(vfio::Node node, vfio::StateStore store)
      : node_(std::move(node)), store_(std::move(store)) {}
  struct Job {
    std::string what;
    std::set<std::string> keys;
    Work work;
    std::function<void()> done;
  };
  void Submit(std::string what, std::set<std::string> keys, Work work,
              std::function<void()> done) override {
    jobs.push_back({std::move(what), std::move(keys), std::move(work), std::move(done)});
    submitted.push_back(jobs.back().what);
  }
  std::shared_ptr<const std::map<PciAddress, vfio::Intent>> Intents() const override {
    return store_.intents_snapshot();
  }
  std::map<PciAddress, vfio::VfCountIntent> VfCounts() const override { return store_.vf_counts(); }
  std::map<std::string, vfio::MdevIntent> MdevIntents() const override { return store_.mdevs(); }
  std::map<PciAddress, vfio::VgpuTypeIntent> VgpuTypes() const override {
    return store_.vgpu_types();
  }
  std::map<std::string, vfio::UsbRecord> UsbRecords() const override {
    return store_.usb_devices();
  }
  // Runs the oldest job as a worker would, then its completion. What the job posts runs at
  // once, followed by `loop_turn`: the owner loop at its quickest, seeing the store as the job
  // left it so far (the interleaving that found rolled-back intents still served).
  bool RunNext() {
    if (jobs.empty()) return false;
    Job job = std::move(jobs.front());
    jobs.pop_front();
    job.work(node_, store_, [&](std::function<void()> fn) {
      fn();
      if (loop_turn) loop_turn();
    });
    if (job.done) job.done();
    return true;
  }
  int RunAll() {
    int n = 0;
    while (RunNext()) ++n;
    return n;
  }
  vfio::StateStore& store() { return store_; }

  std::deque<Job> jobs;
  std::vector<std::string> submitted;
  std::function<void()> loop_turn;

 private:
  vfio::Node node_;
  vfio::StateStore store_;
};

class FakePlugins final : public PluginSink {
 public:
  void Apply(const std::map<std::string, plugin::Resource>& r,
             const std::set<std::string>& names) override {
    plan = r;
    changed = names;
    ++applies;
  }
  void RegisterAll() override { ++register_all; }
  void OnSocketDeleted(const std::string& file, bool register_now) override {
    deleted.emplace_back(file, register_now);
  }
  // The served device `id`, or nullptr.
  const plugin::PluginDevice* Device(const std::string& id) const {
    for (const auto& [name, r] : plan) {
      if (const plugin::PluginDevice* d = plugin::FindDevice(r, id)) return d;
    }
    return nullptr;
  }
  std::map<std::string, plugin::Resource> plan;
  std::set<std::string> changed;  // as the last Apply named them
  int applies = 0;
  int register_all = 0;
  std::vector<std::pair<std::string, bool>> deleted;
};

class FakePublisher final : public InventoryPublisher {
 public:
  void Publish(std::shared_ptr<const projection::Inventory> inv) override {
    last = std::move(inv);
    ++publishes;
  }
  std::shared_ptr<const projection::Inventory> last;
  int publishes = 0;
};

// PodResources: answers with `held` at once, or, when `manual`, when the test calls Answer().
class FakePodResources final : public PodResourcesLister {
 public:
  void List(std::function<void(absl::StatusOr<plugin::DeviceHolders>)> done) override {
    ++calls;
    if (manual) {
      waiting.push_back(std::move(done));
      return;
    }
    if (broken) return done(absl::UnavailableError("PodResources: connection refused"));
    done(held);
  }
  void Answer() {
    auto w = std::move(waiting);
    waiting.clear();
    for (auto& done : w) done(held);
  }
  plugin::DeviceHolders held;
  bool manual = false;
  bool broken = false;
  int calls = 0;
  std::vector<std::function<void(absl::StatusOr<plugin::DeviceHolders>)>> waiting;
};

// The vfio tests' node (unit/vfio/node_fixture.h) with the reconciler on it and fakes for its
// other ports.
struct AgentFixture : pcid::testing::NodeFixture {
  FakeClock clock;
  FakePlugins plugins;
  FakePodResources pods;
  FakePublisher publisher;
  std::unique_ptr<ManualBinder> binder;
  std::unique_ptr<Reconciler> reconciler;
  bool ready = false;

  // Short: the tests' "never answered" binds should fail fast.
  static constexpr std::chrono::milliseconds kProbeWait{50};

  // Builds the reconciler over a store in `state` (which may hold intents already) and starts it.
  void Start(DaemonConfig config = {}) {
    binder =
        std::make_unique<ManualBinder>(MakeNode(kProbeWait), *vfio::StateStore::Open(state.path()));
    reconciler = std::make_unique<Reconciler>(
        ReconcilerOptions{"node1", *sys_root, *dev_root, *proc_root, nullptr, nullptr},
        ReconcilerPorts{*binder, plugins, pods, clock, log.log});
    binder->loop_turn = [this] { reconciler->RunDue(); };
    BOOST_REQUIRE(reconciler->Start(std::move(config), [this] { ready = true; }));
  }

  // Runs every kernel job, then the loop turn's re-plan.
  void Settle() {
    binder->RunAll();
    reconciler->RunDue();
  }
  void RunNext() {
    binder->RunNext();
    reconciler->RunDue();
  }

  // A claim, answered into `out` when the reconciler decides.
  void Claim(bool enable, const std::string& address,
             std::optional<projection::ClaimOutcome>& out) {
    out.reset();
    reconciler->OnClaim({false, enable, address},
                        [&out](projection::ClaimOutcome o) { out = std::move(o); });
  }
};

}  // namespace pcid::agent::testing
