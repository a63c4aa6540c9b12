#include "cmd/flags.h"

#include <boost/test/unit_test.hpp>

namespace pcid::cmd {

BOOST_AUTO_TEST_SUITE(flags)

BOOST_AUTO_TEST_CASE(values_booleans_and_errors) {
  auto f = ParseFlags({"--sysfs-root", "/tmp/x", "--output=json", "--usb", "pos"},
                      {"sysfs-root", "output"}, {"usb"});
  BOOST_REQUIRE(f.ok());
  BOOST_TEST(f->Get("sysfs-root", "") == "/tmp/x");
  BOOST_TEST(f->Get("output", "") == "json");
  BOOST_TEST(f->Has("usb"));
  BOOST_TEST(f->Get("node-name", "dflt") == "dflt");
  BOOST_TEST(f->positional.size() == 1u);
  BOOST_TEST(!ParseFlags({"--bogus"}, {"a"}, {}).ok());
  BOOST_TEST(!ParseFlags({"--a"}, {"a"}, {}).ok());
  BOOST_TEST(!ParseFlags({"--usb=1"}, {}, {"usb"}).ok());
  BOOST_TEST(std::string(ParseFlags({"--bogus"}, {}, {}).status().message()) ==
             "unknown flag --bogus");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid::cmd
