// The standalone config's sriov key: good entries parsed, every bad one an error naming the
// file and the entry.
#include "agent/config.h"

#include <boost/test/unit_test.hpp>

namespace pcid::agent {
namespace {

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
  for (const auto& [json, want] : cases) {
    auto c = ParseConfig(json, "/etc/c.json");
    BOOST_TEST(!c.ok(), json);
    const std::string message(c.status().message());
    BOOST_TEST(message.rfind("/etc/c.json: ", 0) == 0u, message);
    BOOST_TEST(message.find(want) != std::string::npos, message << " lacks " << want);
  }
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::agent
