#include <boost/test/unit_test.hpp>

#include "core/attribute.h"

namespace pcid {

BOOST_AUTO_TEST_SUITE(attribute)

BOOST_AUTO_TEST_CASE(hex_values_as_the_kernel_writes_them) {
  BOOST_TEST(*ParseHexAttribute("0x10de\n", 4) == 0x10deu);
  BOOST_TEST(*ParseHexAttribute("0x030000\n", 6) == 0x030000u);
  BOOST_TEST(*ParseHexAttribute("0951\n", 4) == 0x951u);   // usb idVendor has no 0x
  BOOST_TEST(*ParseHexAttribute("0xA1", 2) == 0xa1u);
  BOOST_TEST(*ParseHexAttribute("  0x1 \n", 4) == 1u);
}

BOOST_AUTO_TEST_CASE(hex_garbage_is_rejected) {
  for (const char* bad : {"", "\n", "0x", "zzzz", "0x10de0", "0x-1", "0x10 de", "10de\n10de",
                          "0x1g", "+0x10"}) {
    BOOST_TEST(!ParseHexAttribute(bad, 4).ok(), "accepted \"" << bad << "\"");
  }
  auto st = ParseHexAttribute("zz\x01", 4).status();
  BOOST_TEST(std::string(st.message()).find("\\x01") != std::string::npos);  // escaped
}

BOOST_AUTO_TEST_CASE(decimal_and_numa) {
  BOOST_TEST(*ParseNumaNode("-1\n") == -1);
  BOOST_TEST(*ParseNumaNode("0\n") == 0);
  BOOST_TEST(*ParseNumaNode("7") == 7);
  for (const char* bad : {"abc", "", "-2", "1.5", "-", "99999999999999999999", "1 2", "0x1"}) {
    BOOST_TEST(!ParseNumaNode(bad).ok(), "accepted \"" << bad << "\"");
  }
  BOOST_TEST(*ParseDecimalAttribute("256\n", 0, 256) == 256);
  BOOST_TEST(!ParseDecimalAttribute("257", 0, 256).ok());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
