// The control socket's request lines: what the CLI sends and the daemon parses, both ways.
#include <boost/test/unit_test.hpp>

#include "agent/device_actions.h"

namespace pcid::agent {
namespace {

BOOST_AUTO_TEST_CASE(request_lines_round_trip_and_refusals) {
  for (const DeviceRequest& r :
       {DeviceRequest{"enable", {"0000:03:00.0", "0000:04:00.0"}, false, 0},
        DeviceRequest{"disable", {"0000:03:00.0"}, true, 0},
        DeviceRequest{"vfs", {"0000:81:00.0"}, false, 8}}) {
    auto back = ParseDeviceRequest(FormatDeviceRequest(r));
    BOOST_REQUIRE_MESSAGE(back.ok(), back.status().message());
    BOOST_TEST(back->verb == r.verb);
    BOOST_TEST(back->addresses == r.addresses, boost::test_tools::per_element());
    BOOST_TEST(back->force == r.force);
    BOOST_TEST(back->vf_count == r.vf_count);
  }
  for (const char* bad :
       {"", "reboot 0000:03:00.0", "enable", "vfs 0000:81:00.0", "vfs 0000:81:00.0 8 9",
        "vfs 0000:81:00.0 -1", "vfs 0000:81:00.0 65536", "vfs 0000:81:00.0 0x8"}) {
    BOOST_TEST(!ParseDeviceRequest(bad).ok(), bad);
  }
  BOOST_TEST(*ParseVfCount("0") == 0u);
  BOOST_TEST(*ParseVfCount("65535") == 65535u);
}

}  // namespace
}  // namespace pcid::agent
