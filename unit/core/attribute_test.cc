#include "core/attribute.h"

#include <boost/test/unit_test.hpp>

namespace pcid {

BOOST_AUTO_TEST_SUITE(attribute)

BOOST_AUTO_TEST_CASE(hex_values_as_the_kernel_writes_them) {
  BOOST_TEST(*ParseHexAttribute("0x10de\n", 4) == 0x10deu);
  BOOST_TEST(*ParseHexAttribute("0x030000\n", 6) == 0x030000u);
  BOOST_TEST(*ParseHexAttribute("0951\n", 4) == 0x951u);  // usb idVendor has no 0x
  BOOST_TEST(*ParseHexAttribute("0xA1", 2) == 0xa1u);
  BOOST_TEST(*ParseHexAttribute("  0x1 \n", 4) == 1u);
}

BOOST_AUTO_TEST_CASE(hex_garbage_is_rejected) {
  for (const char* bad :
       {"", "\n", "0x", "zzzz", "0x10de0", "0x-1", "0x10 de", "10de\n10de", "0x1g", "+0x10"}) {
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

namespace pcid {

BOOST_AUTO_TEST_SUITE(pci_uevent)

BOOST_AUTO_TEST_CASE(kernel_uevent) {
  const PciUevent u = ParsePciUevent(
      "DRIVER=ehci-pci\nPCI_CLASS=C0320\nPCI_ID=8086:8D2D\nPCI_SUBSYS_ID=103C:8030\n"
      "PCI_SLOT_NAME=0000:00:1a.0\nMODALIAS=pci:"
      "v00008086d00008D2Dsv0000103Csd00008030bc0Csc03i20\n");
  BOOST_TEST(u.complete);
  BOOST_TEST(u.driver.value() == "ehci-pci");
  BOOST_TEST(u.vendor == 0x8086);
  BOOST_TEST(u.device == 0x8d2d);
  BOOST_TEST(u.class_code == 0x0c0320u);
  BOOST_TEST(u.subsystem->first == 0x103c);
  BOOST_TEST(u.subsystem->second == 0x8030);
}

BOOST_AUTO_TEST_CASE(unbound_and_incomplete) {
  const PciUevent unbound = ParsePciUevent("PCI_CLASS=60000\nPCI_ID=8086:0D57\n");
  BOOST_TEST(unbound.complete);
  BOOST_TEST(!unbound.driver.has_value());
  BOOST_TEST(!unbound.subsystem.has_value());
  BOOST_TEST(unbound.class_code == 0x060000u);
  for (const char* bad :
       {"", "PCI_ID=8086:0D57\n", "PCI_CLASS=60000\n", "PCI_CLASS=60000\nPCI_ID=ZZZZ:1533\n",
        "PCI_CLASS=\nPCI_ID=8086:1533\n", "PCI_CLASS=1000000\nPCI_ID=8086:1533\n",
        "PCI_CLASS=60000\nPCI_ID=80861533\n", "PCI_CLASS=60000\nPCI_ID=:1533\n",
        "garbage\x01\x02"}) {
    BOOST_TEST(!ParsePciUevent(bad).complete, "complete: \"" << bad << "\"");
  }
  BOOST_TEST(!ParsePciUevent("DRIVER=../x\nPCI_CLASS=0\nPCI_ID=1:2\n").driver.has_value());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
