#include "agent/holder_tracker.h"

#include <boost/test/unit_test.hpp>

#include "unit/agent/fakes.h"

namespace pcid::agent {
namespace {

using namespace testing;

struct TrackerFixture {
  CapturingLogger log;
  FakeClock clock;
  FakePodResources pods;
  HolderTracker tracker{pods, clock, log.log};
  int changes = 0;
  TrackerFixture() {
    pods.manual = true;
    tracker.set_on_change([this] { ++changes; });
  }
};

BOOST_AUTO_TEST_SUITE(holder_tracker)

BOOST_AUTO_TEST_CASE(askers_get_an_answer_sent_after_they_asked_and_share_calls) {
  TrackerFixture f;
  std::vector<std::string> got;
  auto asker = [&](std::string name) {
    return [&got, name](const absl::StatusOr<HolderTracker::Holders>& h) {
      got.push_back(name + std::to_string(h->size()));
    };
  };
  f.tracker.AskFresh(asker("a"));
  BOOST_TEST(f.pods.calls == 1);
  // The call is out: b and c need an answer sent after them, and share the next call.
  f.pods.held["0000:01:00.0"] = "ns/pod/c";
  f.tracker.AskFresh(asker("b"));
  f.tracker.AskFresh(asker("c"));
  BOOST_TEST(f.pods.calls == 1);
  f.pods.Answer();
  BOOST_TEST((got == std::vector<std::string>{"a1"}));
  BOOST_TEST(f.pods.calls == 2);
  f.pods.held.clear();
  f.pods.Answer();
  BOOST_TEST((got == std::vector<std::string>{"a1", "b0", "c0"}));
  BOOST_TEST(f.pods.calls == 2);
  BOOST_TEST(f.changes == 2);
}

BOOST_AUTO_TEST_CASE(an_allocation_counts_until_podresources_shows_it_or_it_expires) {
  TrackerFixture f;
  f.tracker.OnAllocated({"0000:01:00.0"});
  BOOST_TEST(f.tracker.IsHeld("0000:01:00.0"));
  BOOST_TEST(f.tracker.Held().at("0000:01:00.0") == "allocation #1");
  f.clock.Advance(HolderTracker::kPendingAllocation);
  BOOST_TEST(!f.tracker.IsHeld("0000:01:00.0"));  // never shown by the kubelet: expired
}

BOOST_AUTO_TEST_CASE(errors_reach_the_askers_and_are_logged_once) {
  TrackerFixture f;
  f.pods.manual = false;
  f.pods.broken = true;
  int errors = 0;
  for (int i = 0; i < 3; ++i) {
    f.tracker.AskFresh([&](const auto& h) { errors += !h.ok(); });
  }
  BOOST_TEST(errors == 3);
  const std::string text = f.log.text();
  BOOST_TEST(text.find("connection refused") != std::string::npos);
  BOOST_TEST(text.find("connection refused") == text.rfind("connection refused"));
}

BOOST_AUTO_TEST_CASE(polls_only_while_asked_to) {
  TrackerFixture f;
  BOOST_TEST(!f.tracker.NextWake().has_value());
  f.tracker.SetPolling(true);
  BOOST_REQUIRE(f.tracker.NextWake().has_value());
  f.tracker.RunDue();
  BOOST_TEST(f.pods.calls == 0);  // not due yet
  f.clock.Advance(HolderTracker::kPollInterval);
  f.tracker.RunDue();
  BOOST_TEST(f.pods.calls == 1);
  BOOST_TEST(!f.tracker.NextWake().has_value());  // in flight
  f.pods.Answer();
  BOOST_TEST(f.tracker.NextWake().has_value());
  f.tracker.SetPolling(false);
  BOOST_TEST(!f.tracker.NextWake().has_value());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::agent
