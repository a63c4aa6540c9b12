#include "core/id_database.h"

#include <boost/test/unit_test.hpp>

namespace pcid {

BOOST_AUTO_TEST_SUITE(id_database)

BOOST_AUTO_TEST_CASE(parses_vendors_devices_classes) {
  const IdDatabase db = IdDatabase::Parse(
      "# comment\n"
      "10de  NVIDIA Corporation\n"
      "\t1c02  GP106 [GeForce GTX 1060 3GB]\n"
      "\t\t1043 85ac  subsystem, ignored\n"
      "\t10f1  GP106 High Definition Audio Controller\r\n"
      "8086  Intel Corporation\n"
      "\t1533  I210 Gigabit Network Connection\n"
      "C 03  Display controller\n"
      "\t00  VGA compatible controller\n"
      "\t\t00  VGA controller\n"
      "C 0c  Serial bus controller\n"
      "\t03  USB controller\n");
  BOOST_TEST(db.Vendor(0x10de) == "NVIDIA Corporation");
  BOOST_TEST(db.Device(0x10de, 0x1c02) == "GP106 [GeForce GTX 1060 3GB]");
  BOOST_TEST(db.Device(0x10de, 0x10f1) == "GP106 High Definition Audio Controller");
  BOOST_TEST(db.Device(0x8086, 0x1533) == "I210 Gigabit Network Connection");
  BOOST_TEST(db.Device(0x8086, 0x1c02).empty());
  BOOST_TEST(db.Vendor(0x1234).empty());
  BOOST_TEST(db.Class(0x03) == "Display controller");
  BOOST_TEST(db.Subclass(0x03, 0x00) == "VGA compatible controller");
  BOOST_TEST(db.Subclass(0x0c, 0x03) == "USB controller");
  BOOST_TEST(db.Subclass(0x0c, 0x04).empty());
  BOOST_TEST(db.vendor_count() == 2u);
  BOOST_TEST(db.device_count() == 3u);
}

BOOST_AUTO_TEST_CASE(malformed_lines_are_skipped_not_fatal) {
  const IdDatabase db = IdDatabase::Parse(
      "10de  NVIDIA Corporation\n"
      "\t1c0  short id\n"
      "\tzzzz  not hex\n"
      "\t1c02\n"    // no name
      "\t1c03  \n"  // empty name
      "\t1c04  Real\n"
      "10d  short vendor\n"  // ends the vendor section
      "\t1c05  orphan device\n"
      "C zz  bad class\n"
      "\t00  orphan subclass\n"
      "\t\t\t\t\n"
      "AT 0001  another usb.ids section\n"
      "\t0002  must not attach to a vendor\n"
      "\t1c06");  // no trailing newline, truncated
  BOOST_TEST(db.device_count() == 1u);
  BOOST_TEST(db.Device(0x10de, 0x1c04) == "Real");
  BOOST_TEST(db.Device(0x10de, 0x1c05).empty());
  BOOST_TEST(db.Subclass(0, 0).empty());
}

BOOST_AUTO_TEST_CASE(unsorted_and_duplicate_entries) {
  const IdDatabase db = IdDatabase::Parse(
      "8086  Intel\n\t0002  b\n\t0001  a\n\t0001  dup\n10de  NVIDIA\n8086  Intel again\n");
  BOOST_TEST(db.Vendor(0x8086) == "Intel");
  BOOST_TEST(db.Device(0x8086, 0x0001) == "a");
  BOOST_TEST(db.Device(0x8086, 0x0002) == "b");
}

BOOST_AUTO_TEST_CASE(loads_the_system_databases) {
  auto pci = IdDatabase::LoadFirst(DefaultPciIdsPaths());
  BOOST_REQUIRE_MESSAGE(pci.ok(), pci.status().ToString());
  BOOST_TEST(pci->Vendor(0x8086) == "Intel Corporation");
  BOOST_TEST(pci->vendor_count() > 2000u);
  BOOST_TEST(pci->device_count() > 15000u);
  auto usb = IdDatabase::LoadFirst(DefaultUsbIdsPaths());
  BOOST_REQUIRE_MESSAGE(usb.ok(), usb.status().ToString());
  BOOST_TEST(usb->Vendor(0x0951) == "Kingston Technology");
  BOOST_TEST(usb->Class(0x09) == "Hub");
  // usb.ids' later sections (languages, HID usages...) must not leak into the last vendor.
  BOOST_TEST(usb->Device(0xffee, 0x0001).empty());
}

BOOST_AUTO_TEST_CASE(missing_file_is_a_clear_error) {
  auto db = IdDatabase::Load("/nonexistent/pci.ids");
  BOOST_TEST(!db.ok());
  BOOST_TEST(std::string(db.status().message()).find("/nonexistent/pci.ids") != std::string::npos);
  auto none = IdDatabase::LoadFirst({"/nonexistent/a", "/nonexistent/b"});
  BOOST_TEST(absl::IsNotFound(none.status()));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
