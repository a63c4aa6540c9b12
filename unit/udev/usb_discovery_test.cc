#include <boost/test/unit_test.hpp>

#include "core/id_database.h"
#include "udev/discovery.h"
#include "unit/udev/tree_fixture.h"
#include "unit/udev/usb_fixture.h"

namespace pcid {

BOOST_AUTO_TEST_SUITE(usb_discovery)

BOOST_AUTO_TEST_CASE(names_of_devices_and_not_interfaces) {
  for (const char* good : {"usb1", "usb12", "1-1", "1-1.2", "12-3.4.1"}) {
    BOOST_TEST(udev::IsUsbDeviceName(good), good);
  }
  for (const char* bad :
       {"usb", "usbx", "1-1:1.0", "1-", "-1", "1-1.", "a-1", "1-1..2", "../1-1"}) {
    BOOST_TEST(!udev::IsUsbDeviceName(bad), bad);
  }
}

BOOST_AUTO_TEST_CASE(reads_devices_with_their_host_controller) {
  testing::SysfsTree tree;
  const std::string xhci = tree.Add({.address = "0000:00:14.0", .klass = "0x0c0330"});
  auto add_usb = [&](const std::string& rel_dir, const std::string& name, int bus, int dev,
                     const char* vid, const char* pid, const char* cls) {
    const std::string dir = xhci + "/" + rel_dir;
    tree.WriteFile(dir + "/busnum", std::to_string(bus) + "\n");
    tree.WriteFile(dir + "/devnum", std::to_string(dev) + "\n");
    tree.WriteFile(dir + "/idVendor", std::string(vid) + "\n");
    tree.WriteFile(dir + "/idProduct", std::string(pid) + "\n");
    tree.WriteFile(dir + "/bDeviceClass", std::string(cls) + "\n");
    tree.Symlink("bus/usb/devices/" + name, "../../../" + dir);
  };
  add_usb("usb1", "usb1", 1, 1, "1d6b", "0002", "09");
  add_usb("usb1/1-1", "1-1", 1, 4, "0951", "1666", "00");
  tree.MakeDir(xhci + "/usb1/1-1/1-1:1.0");
  tree.Symlink("bus/usb/devices/1-1:1.0", "../../../" + xhci + "/usb1/1-1/1-1:1.0");
  add_usb("usb1/1-2", "1-2", 1, 5, "zzzz", "0001", "00");  // garbage vendor: skipped

  auto sysfs = SysfsRoot::Open(tree.path());
  testing::CapturingLogger cap;
  const IdDatabase ids = *IdDatabase::LoadFirst(DefaultUsbIdsPaths());
  auto devices = udev::DiscoverUsbDevices(*sysfs, &ids, cap.log);
  BOOST_REQUIRE(devices.ok());
  BOOST_REQUIRE(devices->size() == 2u);
  const UsbDevice& stick = (*devices)[1];
  BOOST_TEST(stick.bus == 1u);
  BOOST_TEST(stick.devnum == 4u);
  BOOST_TEST(stick.vendor_id == 0x0951);
  BOOST_TEST(stick.product_id == 0x1666);
  BOOST_TEST(stick.host_controller->ToString() == "0000:00:14.0");
  BOOST_TEST(stick.names.vendor == "Kingston Technology");
  BOOST_TEST(stick.DevicePath() == "/dev/bus/usb/001/004");
  BOOST_TEST((*devices)[0].device_class == 0x09);
  BOOST_TEST(cap.text().find("usb 1-2: skipped") != std::string::npos, cap.text());
}

BOOST_AUTO_TEST_CASE(serial_and_port_identify_a_device) {
  testing::SysfsTree tree;
  const std::string xhci = tree.Add({.address = "0000:00:14.0", .klass = "0x0c0330"});
  testing::PlugUsb(tree, xhci,
                   {.name = "1-1",
                    .devnum = 4,
                    .serial = "  AB\x01"
                              "C  "});
  testing::PlugUsb(tree, xhci, {.name = "2-4", .devnum = 3, .serial = "", .root_speed = "5000"});
  testing::PlugUsb(tree, xhci, {.name = "1-2", .devnum = 5, .serial = std::string(300, 'x')});
  testing::PlugUsb(tree, xhci, {.name = "1-3", .devnum = 6, .serial = "A/B\xc3\xa9\xff"});
  auto sysfs = SysfsRoot::Open(tree.path());
  testing::CapturingLogger cap;
  auto devices = udev::DiscoverUsbDevices(*sysfs, nullptr, cap.log);
  BOOST_REQUIRE(devices.ok());
  std::map<std::string, UsbDevice> by_name;
  for (const UsbDevice& d : *devices) by_name[d.sysfs_name] = d;
  BOOST_REQUIRE(by_name.size() == 6u);          // two root hubs, four devices
  BOOST_TEST(by_name["1-1"].serial == "AB?C");  // blanks trimmed, control character replaced
  BOOST_TEST(by_name["1-1"].port == "0000:00:14.0-1");
  BOOST_TEST(by_name["2-4"].serial == "");
  BOOST_TEST(by_name["2-4"].port == "0000:00:14.0-usb3-4");  // the USB 3 root hub's port 4
  BOOST_TEST(by_name["1-2"].serial.size() == 126u);
  BOOST_TEST(by_name["usb1"].port == "");
  // Not printable ASCII: replaced (the state file's decoder takes what discovery keeps).
  BOOST_TEST(by_name["1-3"].serial == "A/B???");
  BOOST_TEST(cap.text().find("skipped") == std::string::npos, cap.text());
}

BOOST_AUTO_TEST_CASE(no_usb_bus_means_no_devices) {
  testing::TempTree tree;
  auto sysfs = SysfsRoot::Open(tree.path());
  testing::CapturingLogger cap;
  auto devices = udev::DiscoverUsbDevices(*sysfs, nullptr, cap.log);
  BOOST_REQUIRE(devices.ok());
  BOOST_TEST(devices->empty());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
