#include "controller/leader_election.h"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <boost/test/unit_test.hpp>

#include "core/json_writer.h"
#include "projection/kube_client.h"
#include "projection/objects.h"

namespace pcid::controller {
namespace {

spdlog::logger& Log() {
  static auto log = std::make_shared<spdlog::logger>(
      "leader-test", std::make_shared<spdlog::sinks::null_sink_mt>());
  return *log;
}

// One Lease as the API server keeps it: resourceVersion preconditions on PUT, 409 on a stale one.
struct LeaseServer final : projection::KubeCaller {
  std::optional<projection::ObservedObject> lease;
  int64_t rv = 10;
  bool down = false;
  int writes = 0;

  std::string Json() const {
    JsonWriter w;
    w.BeginObject().Key("metadata").BeginObject().Key("name").String(lease->name);
    w.Key("resourceVersion").String(lease->resource_version).EndObject();
    w.Key("spec").BeginObject();
    for (const auto& [k, v] : lease->spec) w.Key(k).String(v);
    for (const auto& [k, v] : lease->spec_ints) w.Key(k).Int(v);
    w.EndObject().EndObject();
    return w.str();
  }

  absl::StatusOr<projection::KubeResponse> Call(std::string_view method, const std::string&,
                                                const std::string& body,
                                                const std::string&) override {
    if (down) return absl::UnavailableError("connection refused");
    if (method == "GET") {
      if (!lease) return projection::KubeResponse{404, "{}"};
      return projection::KubeResponse{200, Json()};
    }
    auto o = projection::DecodeObject(body);
    BOOST_REQUIRE(o.ok());
    if (method == "POST") {
      if (lease) return projection::KubeResponse{409, "{}"};
    } else if (!lease || o->resource_version != lease->resource_version) {
      return projection::KubeResponse{409, "{}"};
    }
    ++writes;
    lease = *o;
    lease->resource_version = std::to_string(++rv);
    return projection::KubeResponse{method == "POST" ? 201 : 200, Json()};
  }
  using KubeCaller::Call;

  std::string holder() const { return lease ? lease->spec.at("holderIdentity") : ""; }
};

LeaseConfig Config(const std::string& identity) {
  LeaseConfig c;
  c.identity = identity;
  return c;  // 15 s lease, 10 s renew deadline, 2 s retry
}

BOOST_AUTO_TEST_SUITE(leader_election)

BOOST_AUTO_TEST_CASE(one_leads_the_other_takes_over_after_the_lease_expires) {
  LeaseServer server;
  FakeClock clock;
  LeaderElector a(Config("a"), server, clock, Log());
  LeaderElector b(Config("b"), server, clock, Log());
  BOOST_TEST(a.TryAcquireOrRenew());
  BOOST_TEST(server.holder() == "a");
  BOOST_TEST(!b.TryAcquireOrRenew());
  // a renews; b sees the record change each time and keeps waiting.
  for (int i = 0; i < 10; ++i) {
    clock.Advance(std::chrono::seconds(2));
    BOOST_TEST(a.TryAcquireOrRenew());
    BOOST_TEST(!b.TryAcquireOrRenew());
  }
  BOOST_TEST(server.lease->spec_ints.at("leaseTransitions") == 0);
  // a dies (kill -9: no release). b takes over only once 15 s passed since it saw a change.
  clock.Advance(std::chrono::seconds(14));
  BOOST_TEST(!b.TryAcquireOrRenew());
  clock.Advance(std::chrono::seconds(2));
  BOOST_TEST(b.TryAcquireOrRenew());
  BOOST_TEST(server.holder() == "b");
  BOOST_TEST(server.lease->spec_ints.at("leaseTransitions") == 1);
  // a comes back: it sees b and stops leading at once.
  BOOST_TEST(!a.TryAcquireOrRenew());
  BOOST_TEST(!a.leading());
}

BOOST_AUTO_TEST_CASE(release_hands_over_at_the_next_retry) {
  LeaseServer server;
  FakeClock clock;
  LeaderElector a(Config("a"), server, clock, Log());
  LeaderElector b(Config("b"), server, clock, Log());
  BOOST_TEST(a.TryAcquireOrRenew());
  BOOST_TEST(!b.TryAcquireOrRenew());
  BOOST_TEST(a.Release().ok());
  BOOST_TEST(server.holder() == "");
  BOOST_TEST(b.TryAcquireOrRenew());
  BOOST_TEST(server.holder() == "b");
  const int writes = server.writes;
  BOOST_TEST(a.Release().ok());  // not the holder: no write
  BOOST_TEST(server.writes == writes);
}

BOOST_AUTO_TEST_CASE(a_leader_survives_short_outages_and_loses_after_the_deadline) {
  LeaseServer server;
  FakeClock clock;
  LeaderElector a(Config("a"), server, clock, Log());
  BOOST_TEST(a.TryAcquireOrRenew());
  server.down = true;
  clock.Advance(std::chrono::seconds(6));
  BOOST_TEST(a.TryAcquireOrRenew());  // 6 s without renewal: still within the 10 s deadline
  clock.Advance(std::chrono::seconds(5));
  BOOST_TEST(!a.TryAcquireOrRenew());
  BOOST_TEST(!a.leading());
}

BOOST_AUTO_TEST_CASE(after_a_release_the_first_to_write_wins) {
  LeaseServer server;
  FakeClock clock;
  LeaderElector a(Config("a"), server, clock, Log());
  LeaderElector b(Config("b"), server, clock, Log());
  BOOST_TEST(a.TryAcquireOrRenew());
  BOOST_TEST(a.Release().ok());
  // a takes the released lease first; b reads a fresh holder and waits.
  BOOST_TEST(a.TryAcquireOrRenew());
  BOOST_TEST(!b.TryAcquireOrRenew());
  BOOST_TEST(server.holder() == "a");
}

BOOST_AUTO_TEST_CASE(flags_that_make_no_sense_are_refused) {
  LeaseConfig c = Config("a");
  BOOST_TEST(CheckLeaseConfig(c).ok());
  c.renew_deadline = c.lease_duration;
  BOOST_TEST(!CheckLeaseConfig(c).ok());
  c = Config("");
  BOOST_TEST(!CheckLeaseConfig(c).ok());
  c = Config("a");
  c.retry_period = c.renew_deadline;
  BOOST_TEST(!CheckLeaseConfig(c).ok());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::controller
