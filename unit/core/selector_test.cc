#include "core/selector.h"

#include <boost/test/unit_test.hpp>

namespace pcid {

BOOST_AUTO_TEST_SUITE(selector)

BOOST_AUTO_TEST_CASE(pci_selectors_need_every_named_field) {
  PciDevice gpu;
  gpu.address = *ParsePciAddress("0000:01:00.0");
  gpu.vendor_id = 0x10de;
  gpu.device_id = 0x1c02;
  gpu.class_code = 0x03;
  gpu.driver = "vfio-pci";
  BOOST_TEST(Matches(DeviceSelector{.vendor = 0x10de}, gpu));
  BOOST_TEST(Matches(DeviceSelector{.vendor = 0x10de, .class_id = 0x0300}, gpu));
  BOOST_TEST(!Matches(DeviceSelector{.vendor = 0x10de, .class_id = 0x0403}, gpu));
  BOOST_TEST(Matches(DeviceSelector{.address = gpu.address}, gpu));
  BOOST_TEST(!Matches(DeviceSelector{.address = *ParsePciAddress("0000:01:00.1")}, gpu));
  BOOST_TEST(Matches(DeviceSelector{.driver = "vfio-pci"}, gpu));
  BOOST_TEST(!Matches(DeviceSelector{.driver = "nvidia"}, gpu));
  BOOST_TEST(MatchesAny({DeviceSelector{.vendor = 0x8086}, DeviceSelector{.device = 0x1c02}}, gpu));
}

BOOST_AUTO_TEST_CASE(usb_devices_match_on_vendor_and_product_only) {
  UsbDevice stick;
  stick.vendor_id = 0x0951;
  stick.product_id = 0x1666;
  BOOST_TEST(Matches(DeviceSelector{.vendor = 0x0951}, stick));
  BOOST_TEST(Matches(DeviceSelector{.vendor = 0x0951, .device = 0x1666}, stick));
  BOOST_TEST(!Matches(DeviceSelector{.vendor = 0x0951, .device = 0x1667}, stick));
  // PCI-only fields make a selector a PCI selector.
  BOOST_TEST(!Matches(DeviceSelector{.vendor = 0x0951, .class_id = 0x0c03}, stick));
  BOOST_TEST(!Matches(DeviceSelector{.address = *ParsePciAddress("0000:00:14.0")}, stick));
  BOOST_TEST(!Matches(DeviceSelector{.vendor = 0x0951, .driver = "usb-storage"}, stick));
  BOOST_TEST(!Matches(DeviceSelector{}, stick));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
