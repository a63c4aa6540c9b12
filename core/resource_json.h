// File: core/resource_json.h
//
// The custom-resource shape of a device (DESIGN.md, "Projection"): `PCIDevice` / `USBDevice` of
// devices.harvesterhci.io/v1beta1 with `metadata.name`, the `nodename` label and `status`. Used by
// `pcidevices list --output json` and by the projection, so both always agree. Pure functions.
#pragma once

#include <string_view>

#include "core/device.h"
#include "core/json_writer.h"

namespace pcid {

inline constexpr std::string_view kDevicesApiVersion = "devices.harvesterhci.io/v1beta1";

// Writes one PCIDevice object. Status fields: address, vendorId, deviceId, classId, iommuGroup
// ("" without a group), nodeName, resourceName, description, kernelDriverInUse, numaNode (-1 =
// none).
void WritePciDeviceObject(JsonWriter& json, const PciDevice& dev, std::string_view node);

// Harvester's USBDevice status.status for an enabled device that is gone.
inline constexpr char kUsbStatusOrphaned[] = "orphaned";

// Writes one USBDevice object. Status fields: vendorID, productID, nodeName, resourceName,
// devicePath, description, pciAddress, enabled; for a device that is not present (`!usb.present`)
// also status "orphaned" and a message saying what brings it back.
void WriteUsbDeviceObject(JsonWriter& json, const UsbDevice& usb, std::string_view node,
                          bool enabled);

}  // namespace pcid
