#include "core/naming.h"

#include <boost/test/unit_test.hpp>

#include "core/id_database.h"

namespace pcid {
namespace {

PciDevice Named(uint16_t vendor_id, uint16_t device_id, std::string vendor, std::string device) {
  PciDevice dev;
  dev.vendor_id = vendor_id;
  dev.device_id = device_id;
  dev.names.Mutable().vendor = std::move(vendor);
  dev.names.Mutable().device = std::move(device);
  return dev;
}

// A device named from the system's pci.ids, as discovery would name it.
PciDevice FromPciIds(uint16_t vendor_id, uint16_t device_id) {
  static const IdDatabase db = *IdDatabase::LoadFirst(DefaultPciIdsPaths());
  return Named(vendor_id, device_id, std::string(db.Vendor(vendor_id)),
               std::string(db.Device(vendor_id, device_id)));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(naming)

BOOST_AUTO_TEST_CASE(object_names_as_design_md) {
  BOOST_TEST(PciObjectName("testnode1", *ParsePciAddress("0000:3f:06.3")) == "testnode1-00003f063");
  UsbDevice usb;
  usb.vendor_id = 0x0951;
  usb.product_id = 0x1666;
  usb.bus = 2;
  usb.devnum = 4;
  BOOST_TEST(UsbObjectName("jacknode", usb) == "jacknode-0951-1666-002004");
  BOOST_TEST(UsbResourceName("jacknode", usb) == "kubevirt.io/jacknode-0951-1666-002004");
  BOOST_TEST(usb.DevicePath() == "/dev/bus/usb/002/004");
}

BOOST_AUTO_TEST_CASE(vendor_device_ids) {
  BOOST_TEST(VendorDeviceIds(0x10de, 0x1c03) == "10de:1c03");
  BOOST_TEST(VendorDeviceIds(0x0951, 0x00a1) == "0951:00a1");  // zero-padded, lower case
}

BOOST_AUTO_TEST_CASE(vendor_part) {
  BOOST_TEST(ResourceVendorPart("Advanced Micro Devices, Inc. [AMD/ATI]", 0x1002) == "amd.com");
  BOOST_TEST(ResourceVendorPart("NVIDIA Corporation", 0x10de) == "nvidia.com");
  BOOST_TEST(ResourceVendorPart("Mellanox Technologies", 0x15b3) == "mellanox.com");
  BOOST_TEST(ResourceVendorPart("Red Hat, Inc.", 0x1af4) == "red.com");  // Harvester's rule
  BOOST_TEST(ResourceVendorPart("ULi Electronics Inc.", 0x10b9) == "uli.com");
  BOOST_TEST(ResourceVendorPart("Foo [] Bar [B-Z/x]", 1) == "bz.com");  // first non-empty [...]
  BOOST_TEST(ResourceVendorPart("Broken [Name", 1) == "broken.com");    // unclosed bracket
  BOOST_TEST(ResourceVendorPart("", 0x1d0f) == "1d0f.com");             // unknown vendor
  BOOST_TEST(ResourceVendorPart("[/]", 0xabcd) == "abcd.com");          // cleans to nothing
}

BOOST_AUTO_TEST_CASE(device_part) {
  BOOST_TEST(ResourceDevicePart("GP106 [GeForce GTX 1060 3GB]", 0x1c02) ==
             "GP106_GEFORCE_GTX_1060_3GB");
  BOOST_TEST(ResourceDevicePart("  a\t\t b  ", 1) == "A_B");
  BOOST_TEST(ResourceDevicePart("x.y/z", 1) == "X_Y_Z");
  BOOST_TEST(ResourceDevicePart("", 0x1c02) == "1c02");
  BOOST_TEST(ResourceDevicePart("+++", 0x00ab) == "00ab");
  BOOST_TEST(ResourceDevicePart("Name -", 1) == "NAME");  // '-' dropped, then trailing '_'
}

BOOST_AUTO_TEST_CASE(resource_names_from_the_real_pci_ids) {
  BOOST_TEST(PciResourceName(FromPciIds(0x10de, 0x1c02)) ==
             "nvidia.com/GP106_GEFORCE_GTX_1060_3GB");
  BOOST_TEST(PciResourceName(FromPciIds(0x1002, 0x4b49)) == "amd.com/R481_RADEON_X850_XT_AGP");
  BOOST_TEST(PciResourceName(FromPciIds(0x15b3, 0x0212)) ==
             "mellanox.com/MT2892_FAMILY_CONNECTX6_DX_FLASH_RECOVERY");
  // "ULi 1689,1573 integrated ethernet.": the final '.' becomes '_' and is trimmed.
  BOOST_TEST(PciResourceName(FromPciIds(0x10b9, 0x5263)) ==
             "uli.com/ULI_16891573_INTEGRATED_ETHERNET");
  // Unknown device ID: the ID stands in for the name.
  BOOST_TEST(PciResourceName(FromPciIds(0x10de, 0xfffe)) == "nvidia.com/fffe");
}

BOOST_AUTO_TEST_CASE(socket_path_length_fallbacks) {
  // "NETXTREME_II_BCM57800_1_10_GIGABIT_ETHERNET_VIRTUAL_FUNCTION": a 118-byte socket path;
  // with VF it is 104.
  const std::string vf = PciResourceName(FromPciIds(0x14e4, 0x16a9));
  BOOST_TEST(vf == "broadcom.com/NETXTREME_II_BCM57800_1_10_GIGABIT_ETHERNET_VF");
  // Still too long with VF (108 bytes): the device ID.
  BOOST_TEST(PciResourceName(FromPciIds(0x15b3, 0x1004)) == "mellanox.com/1004");
  BOOST_TEST(PciResourceName(FromPciIds(0x168a, 0xc072)) == "utimaco.com/c072");
  // Short names are left alone even when they hold VIRTUAL_FUNCTION.
  BOOST_TEST(PciResourceName(Named(0x8086, 0x154c, "Intel Corporation",
                                   "Ethernet Virtual Function 700 Series")) ==
             "intel.com/ETHERNET_VIRTUAL_FUNCTION_700_SERIES");
  // The boundary: a 107-byte socket path is allowed, 108 is not.
  const std::string fifty(50, 'A');
  const std::string at_limit = PciResourceName(Named(0x10de, 0x1234, "NVIDIA Corporation", fifty));
  BOOST_TEST(at_limit == "nvidia.com/" + fifty);
  BOOST_TEST(kKubeletDevicePluginDir.size() + PluginSocketName(at_limit).size() == kMaxSocketPath);
  BOOST_TEST(PciResourceName(Named(0x10de, 0x1234, "NVIDIA Corporation", fifty + "B")) ==
             "nvidia.com/1234");
}

BOOST_AUTO_TEST_CASE(plugin_socket_name) {
  BOOST_TEST(PluginSocketName("nvidia.com/GP106_GEFORCE_GTX_1060_3GB") ==
             "kubevirt-nvidia.com-GP106_GEFORCE_GTX_1060_3GB.sock");
}

BOOST_AUTO_TEST_CASE(descriptions_with_lspci_fallbacks) {
  PciDevice dev = Named(0x10de, 0x1c02, "NVIDIA Corporation", "GP106 [GeForce GTX 1060 3GB]");
  dev.class_code = 0x03;
  dev.subclass = 0x00;
  dev.names.Mutable().class_name = "Display controller";
  dev.names.Mutable().subclass_name = "VGA compatible controller";
  BOOST_TEST(PciDescription(dev) ==
             "VGA compatible controller: NVIDIA Corporation GP106 [GeForce GTX 1060 3GB]");
  dev.names.Mutable().subclass_name.clear();
  BOOST_TEST(PciDescription(dev) ==
             "Display controller: NVIDIA Corporation GP106 [GeForce GTX 1060 3GB]");
  dev.names = {};
  dev.class_code = 0xff;
  dev.subclass = 0x0e;
  BOOST_TEST(PciDescription(dev) == "Class ff0e: Vendor 10de Device 1c02");
  UsbDevice usb;
  usb.vendor_id = 0x0951;
  usb.product_id = 0x1666;
  BOOST_TEST(UsbDescription(usb) == "Vendor 0951 Device 1666");
  usb.names.vendor = "Kingston Technology";
  usb.names.device = "DataTraveler 100 G3/G4/SE9 G2/50";
  BOOST_TEST(UsbDescription(usb) == "Kingston Technology DataTraveler 100 G3/G4/SE9 G2/50");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
