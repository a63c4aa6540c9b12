#include <boost/test/unit_test.hpp>

#include "core/pci_address.h"

namespace pcid {

BOOST_AUTO_TEST_SUITE(pci_address)

BOOST_AUTO_TEST_CASE(parses_and_prints_canonical_form) {
  auto a = ParsePciAddress("0000:3f:06.3");
  BOOST_REQUIRE(a.ok());
  BOOST_TEST(a->domain == 0);
  BOOST_TEST(a->bus == 0x3f);
  BOOST_TEST(a->device == 6);
  BOOST_TEST(a->function == 3);
  BOOST_TEST(a->ToString() == "0000:3f:06.3");
  BOOST_TEST(a->CompactString() == "00003f063");
  BOOST_TEST(ParsePciAddress("ffff:ff:1f.7")->ToString() == "ffff:ff:1f.7");
}

BOOST_AUTO_TEST_CASE(rejects_everything_that_is_not_exactly_an_address) {
  for (const char* bad :
       {"", "0000:3f:06", "0000:3F:06.3", "0000:3f:06.8", "0000:3f:20.0", " 0000:3f:06.3",
        "0000:3f:06.3 ", "0000:3f:06.3\n", "../../..", "0000:00:1f.6/../x", "00:3f:06.3",
        "0000-3f-06.3", "0000:3f:06.3.1", "g000:3f:06.3", "0000:3f:0x.3", "0000:00:1f.\0"}) {
    auto a = ParsePciAddress(bad);
    BOOST_TEST(!a.ok(), "accepted \"" << bad << "\"");
    BOOST_TEST(!IsPciAddress(bad));
  }
  auto a = ParsePciAddress(std::string_view("0000:00:1f.6\0", 13));
  BOOST_TEST(!a.ok());
  BOOST_TEST(std::string(a.status().message()).find("invalid PCI address") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(orders_by_domain_bus_device_function) {
  BOOST_TEST((*ParsePciAddress("0000:00:1f.0") < *ParsePciAddress("0000:01:00.0")));
  BOOST_TEST((*ParsePciAddress("0000:ff:1f.7") < *ParsePciAddress("0001:00:00.0")));
  BOOST_TEST((*ParsePciAddress("0000:00:01.0") < *ParsePciAddress("0000:00:01.1")));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
