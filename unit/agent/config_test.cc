// The standalone config's sriov and mdevs keys: good entries parsed, every bad one an error naming
// the file and the entry.
#include "agent/config.h"

#include <boost/test/unit_test.hpp>

namespace pcid::agent {
namespace {

// Each config refused with an error naming the file and containing its text.
template <size_t N>
void ExpectRefused(const std::pair<const char*, const char*> (&cases)[N]) {
  for (const auto& [json, want] : cases) {
    auto c = ParseConfig(json, "/etc/c.json");
    BOOST_TEST(!c.ok(), json);
    const std::string message(c.status().message());
    BOOST_TEST(message.rfind("/etc/c.json: ", 0) == 0u, message);
    BOOST_TEST(message.find(want) != std::string::npos, message << " lacks " << want);
  }
}

BOOST_AUTO_TEST_SUITE(config)

BOOST_AUTO_TEST_CASE(sriov_entries) {
  auto c = ParseConfig(
      R"({"sriov": [{"address": "0000:04:00.0", "numVFs": 2},
                    {"address": "0000:05:00.0", "numVFs": 0, "driversAutoprobe": false}]})",
      "/etc/c.json");
  BOOST_REQUIRE(c.ok());
  BOOST_REQUIRE(c->sriov.size() == 2u);
  BOOST_TEST(c->sriov[0].address.ToString() == "0000:04:00.0");
  BOOST_TEST(c->sriov[0].num_vfs == 2u);
  BOOST_TEST(!c->sriov[0].drivers_autoprobe.has_value());
  BOOST_TEST((c->sriov[1].drivers_autoprobe == std::optional<bool>(false)));
}

BOOST_AUTO_TEST_CASE(bad_sriov_entries_name_the_entry) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"sriov": {}})", "\"sriov\" must be an array"},
      {R"({"sriov": [3]})", "sriov[0]: want an object"},
      {R"({"sriov": [{"address": "0000:04:00.0"}]})", "want \"address\" and \"numVFs\""},
      {R"({"sriov": [{"address": "0000:04:00.0", "numVFs": -1}]})", "numVFs: want an integer"},
      {R"({"sriov": [{"address": "0000:04:00.0", "numVFs": 1.5}]})", "numVFs: want an integer"},
      {R"({"sriov": [{"address": "0000:04:00.0", "numVFs": "2"}]})", "numVFs: want an integer"},
      {R"({"sriov": [{"address": "0000:04:00.0", "numVFs": 70000}]})", "0 to 65535"},
      {R"({"sriov": [{"address": "../../x", "numVFs": 1}]})", "sriov[0].address: "},
      {R"({"sriov": [{"address": "0000:04:00.0", "numVFs": 1, "colour": 1}]})",
       "unknown key \"colour\""},
      {R"({"sriov": [{"address": "0000:04:00.0", "numVFs": 1, "driversAutoprobe": "no"}]})",
       "driversAutoprobe: want true or false"},
      {R"({"sriov": [{"address": "0000:04:00.0", "numVFs": 1},
                     {"address": "0000:04:00.0", "numVFs": 2}]})",
       "sriov[1]: 0000:04:00.0 listed twice"},
  };
  ExpectRefused(cases);
}

BOOST_AUTO_TEST_CASE(mdev_entries) {
  auto c = ParseConfig(
      R"({"mdevs": [{"parent": "mtty", "type": "mtty-2", "count": 2},
                    {"parent": "0000:08:01.7", "type": "nvidia-746", "count": 0}]})",
      "/etc/c.json");
  BOOST_REQUIRE(c.ok());
  BOOST_REQUIRE(c->mdevs.size() == 2u);
  BOOST_TEST((c->mdevs[0] == MdevConfig{.parent = "mtty", .type = "mtty-2", .count = 2}));
  BOOST_TEST(c->mdevs[1].parent == "0000:08:01.7");
  BOOST_TEST(c->mdevs[1].count == 0u);
}

BOOST_AUTO_TEST_CASE(bad_mdev_entries_name_the_entry) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"mdevs": {}})", "\"mdevs\" must be an array"},
      {R"({"mdevs": ["mtty"]})", "mdevs[0]: want an object"},
      {R"({"mdevs": [{"parent": "mtty", "count": 1}]})", "want \"parent\", \"type\" and \"count\""},
      {R"({"mdevs": [{"parent": "mtty", "type": "mtty-1"}]})", "and \"count\""},
      {R"({"mdevs": [{"parent": "../mtty", "type": "mtty-1", "count": 1}]})",
       "mdevs[0].parent: \"../mtty\" is not a PCI address or mdev parent name"},
      {R"({"mdevs": [{"parent": "mtty", "type": "../../../block/sda", "count": 1}]})",
       "mdevs[0].type: \"../../../block/sda\" is not a type directory name"},
      {R"({"mdevs": [{"parent": "mtty", "type": "..", "count": 1}]})", "not a type directory"},
      {R"({"mdevs": [{"parent": "mtty", "type": "a/b", "count": 1}]})", "not a type directory"},
      {R"({"mdevs": [{"parent": "", "type": "mtty-1", "count": 1}]})", "not a PCI address"},
      {R"({"mdevs": [{"parent": "mtty", "type": "mtty-1", "count": -1}]})", "0 to 4096"},
      {R"({"mdevs": [{"parent": "mtty", "type": "mtty-1", "count": 5000}]})", "0 to 4096"},
      {R"({"mdevs": [{"parent": "mtty", "type": "mtty-1", "count": "2"}]})", "count: want an"},
      {R"({"mdevs": [{"parent": 3, "type": "mtty-1", "count": 1}]})", "parent: want a string"},
      {R"({"mdevs": [{"parent": "mtty", "type": "mtty-1", "count": 1, "uuid": "x"}]})",
       "unknown key \"uuid\""},
      {R"({"mdevs": [{"parent": "mtty", "type": "mtty-1", "count": 1},
                     {"parent": "mtty", "type": "mtty-1", "count": 2}]})",
       "mdevs[1]: type mtty-1 of mtty listed twice"},
  };
  ExpectRefused(cases);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::agent
