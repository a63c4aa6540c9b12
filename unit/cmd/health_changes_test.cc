#include <boost/test/unit_test.hpp>

#include "cmd/daemon_metrics.h"

namespace pcid::cmd {
namespace {

plugin::Resource Nics(std::vector<std::pair<std::string, bool>> devices) {
  plugin::Resource r;
  r.name = "intel.com/NIC";
  for (auto& [id, healthy] : devices) {
    plugin::PluginDevice d;
    d.id = id;
    d.healthy = healthy;
    r.devices.push_back(d);
  }
  return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(health_changes)

BOOST_AUTO_TEST_CASE(counts_flips_of_devices_it_served_before) {
  metrics::Registry registry;
  auto& family = registry.AddCounter("flips", "test", {"resource"});
  HealthChanges health(family);
  const std::set<std::string> changed = {"intel.com/NIC"};
  auto value = [&] { return family.With({"intel.com/NIC"}).value(); };

  health.Observe({{"intel.com/NIC", Nics({{"a", true}, {"b", true}})}}, changed);
  BOOST_TEST(value() == 0u);  // first seen: nothing changed
  health.Observe({{"intel.com/NIC", Nics({{"a", false}, {"b", true}})}}, changed);
  BOOST_TEST(value() == 1u);
  health.Observe({{"intel.com/NIC", Nics({{"a", false}, {"b", true}})}}, {});
  BOOST_TEST(value() == 1u);  // not among the changed resources
  // b leaves and c arrives (unhealthy) in one plan: neither is a flip.
  health.Observe({{"intel.com/NIC", Nics({{"a", true}, {"c", false}})}}, changed);
  BOOST_TEST(value() == 2u);  // a flipped back
  // b comes back unhealthy: it left in between, so it is new again, not a flip from healthy.
  health.Observe({{"intel.com/NIC", Nics({{"a", true}, {"b", false}, {"c", true}})}}, changed);
  BOOST_TEST(value() == 3u);  // c only
  // The resource goes, then comes back with other health: a new resource, no flips.
  health.Observe({}, changed);
  health.Observe({{"intel.com/NIC", Nics({{"a", false}, {"b", true}, {"c", false}})}}, changed);
  BOOST_TEST(value() == 3u);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid::cmd
