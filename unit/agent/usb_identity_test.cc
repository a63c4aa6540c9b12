#include "agent/usb_identity.h"

#include <boost/test/unit_test.hpp>

namespace pcid::agent {
namespace {

UsbDevice Stick(unsigned bus, unsigned devnum, std::string port, std::string serial = "") {
  UsbDevice d;
  d.bus = bus;
  d.devnum = devnum;
  d.vendor_id = 0x0951;
  d.product_id = 0x1666;
  d.port = std::move(port);
  d.serial = std::move(serial);
  return d;
}

UsbDevice Named(UsbDevice d, std::string name, bool present = true) {
  d.name = std::move(name);
  d.present = present;
  return d;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(usb_identity)

BOOST_AUTO_TEST_CASE(first_seen_devices_get_harvesters_names) {
  std::vector<UsbDevice> now = {Stick(2, 4, "0000:00:14.0-1"), Stick(2, 5, "0000:00:14.0-2")};
  NameUsbDevices(now, {}, "jacknode");
  BOOST_TEST(now[0].name == "jacknode-0951-1666-002004");
  BOOST_TEST(now[1].name == "jacknode-0951-1666-002005");
}

BOOST_AUTO_TEST_CASE(replugged_into_the_same_port_keeps_its_name) {
  const std::vector<UsbDevice> known = {
      Named(Stick(2, 4, "0000:00:14.0-1"), "n-0951-1666-002004", false)};
  std::vector<UsbDevice> now = {Stick(2, 9, "0000:00:14.0-1")};
  NameUsbDevices(now, known, "n");
  BOOST_TEST(now[0].name == "n-0951-1666-002004");
}

BOOST_AUTO_TEST_CASE(without_a_serial_another_port_is_another_device) {
  const std::vector<UsbDevice> known = {
      Named(Stick(2, 4, "0000:00:14.0-1"), "n-0951-1666-002004", false)};
  std::vector<UsbDevice> now = {Stick(2, 9, "0000:00:14.0-3")};
  NameUsbDevices(now, known, "n");
  BOOST_TEST(now[0].name == "n-0951-1666-002009");
}

BOOST_AUTO_TEST_CASE(with_a_serial_any_port_keeps_its_name_and_its_own_port_wins) {
  const std::vector<UsbDevice> known = {
      Named(Stick(2, 4, "0000:00:14.0-1", "AA"), "n-0951-1666-002004", false),
      Named(Stick(2, 6, "0000:00:14.0-2", "AA"), "n-0951-1666-002006", false)};
  // Two sticks sharing a serial (cheap ones do): each goes by its port first.
  std::vector<UsbDevice> now = {Stick(3, 2, "0000:00:14.0-2", "AA"),
                                Stick(3, 3, "0000:00:14.0-1", "AA")};
  NameUsbDevices(now, known, "n");
  BOOST_TEST(now[0].name == "n-0951-1666-002006");
  BOOST_TEST(now[1].name == "n-0951-1666-002004");
  // One of them in a new port: the serial finds it.
  std::vector<UsbDevice> moved = {Stick(3, 7, "0000:00:1d.0-4", "AA")};
  NameUsbDevices(moved, known, "n");
  BOOST_TEST(moved[0].name == "n-0951-1666-002004");
}

BOOST_AUTO_TEST_CASE(another_model_or_serial_in_the_port_is_another_device) {
  const std::vector<UsbDevice> known = {
      Named(Stick(2, 4, "0000:00:14.0-1", "AA"), "n-0951-1666-002004", false)};
  UsbDevice other_model = Stick(2, 4, "0000:00:14.0-1", "AA");
  other_model.product_id = 0x1667;
  std::vector<UsbDevice> now = {other_model, Stick(2, 5, "0000:00:14.0-2", "BB")};
  NameUsbDevices(now, known, "n");
  BOOST_TEST(now[0].name == "n-0951-1667-002004");
  BOOST_TEST(now[1].name == "n-0951-1666-002005");
}

BOOST_AUTO_TEST_CASE(a_new_device_never_takes_a_remembered_name) {
  // The orphaned stick was 002/004; a different stick (no serial, other port) now is 002/004.
  const std::vector<UsbDevice> known = {
      Named(Stick(2, 4, "0000:00:14.0-1"), "n-0951-1666-002004", false),
      Named(Stick(2, 5, "0000:00:14.0-5"), "n-0951-1666-002004-2", false)};
  std::vector<UsbDevice> now = {Stick(2, 4, "0000:00:14.0-3")};
  NameUsbDevices(now, known, "n");
  BOOST_TEST(now[0].name == "n-0951-1666-002004-3");
}

BOOST_AUTO_TEST_CASE(a_remembered_name_goes_to_one_device) {
  const std::vector<UsbDevice> known = {
      Named(Stick(2, 4, "0000:00:14.0-1", "AA"), "n-0951-1666-002004")};
  std::vector<UsbDevice> now = {Stick(2, 7, "0000:00:14.0-6", "AA"),
                                Stick(2, 8, "0000:00:14.0-7", "AA")};
  NameUsbDevices(now, known, "n");
  BOOST_TEST(now[0].name == "n-0951-1666-002004");
  BOOST_TEST(now[1].name == "n-0951-1666-002008");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid::agent
