#include "core/resource_json.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>

#include "core/naming.h"

namespace pcid {
namespace {

void WriteMetadata(JsonWriter& json, std::string_view kind, const std::string& name,
                   std::string_view node) {
  json.Key("apiVersion").String(kDevicesApiVersion);
  json.Key("kind").String(kind);
  json.Key("metadata").BeginObject();
  json.Key("name").String(name);
  json.Key("labels").BeginObject().Key("nodename").String(node).EndObject();
  json.EndObject();
}

}  // namespace

void WritePciDeviceObject(JsonWriter& json, const PciDevice& dev, std::string_view node) {
  json.BeginObject();
  WriteMetadata(json, "PCIDevice", PciObjectName(node, dev.address), node);
  json.Key("status").BeginObject();
  json.Key("address").String(dev.address.ToString());
  json.Key("vendorId").String(absl::StrFormat("%04x", dev.vendor_id));
  json.Key("deviceId").String(absl::StrFormat("%04x", dev.device_id));
  json.Key("classId").String(absl::StrFormat("%04x", dev.class_id()));
  json.Key("iommuGroup").String(dev.iommu_group ? std::to_string(*dev.iommu_group) : "");
  json.Key("nodeName").String(node);
  json.Key("resourceName").String(PciResourceName(dev));
  json.Key("description").String(PciDescription(dev));
  json.Key("kernelDriverInUse").String(dev.driver);
  json.Key("numaNode").Int(dev.numa_node);
  json.EndObject();
  json.EndObject();
}

void WriteUsbDeviceObject(JsonWriter& json, const UsbDevice& usb, std::string_view node,
                          bool enabled) {
  json.BeginObject();
  WriteMetadata(json, "USBDevice", UsbObjectName(node, usb), node);
  json.Key("status").BeginObject();
  json.Key("vendorID").String(absl::StrFormat("%04x", usb.vendor_id));
  json.Key("productID").String(absl::StrFormat("%04x", usb.product_id));
  json.Key("nodeName").String(node);
  json.Key("resourceName").String(UsbResourceName(node, usb));
  json.Key("devicePath").String(usb.DevicePath());
  json.Key("description").String(UsbDescription(usb));
  json.Key("pciAddress").String(usb.host_controller ? usb.host_controller->ToString() : "");
  json.Key("enabled").Bool(enabled);
  if (!usb.present) {
    // Harvester's mark for an enabled device that is gone; the message says what brings it back.
    json.Key("status").String(kUsbStatusOrphaned);
    json.Key("message").String(
        absl::StrCat("unplugged: served again when plugged back in ", UsbWhereToPlug(usb),
                     "; remove it from its virtual machine or disable it to let it go"));
  }
  json.EndObject();
  json.EndObject();
}

}  // namespace pcid
