// File: core/naming.h
//
// The names the outside world sees, compatible with Harvester's devices.harvesterhci.io/v1beta1
// byte for byte where Harvester defines them (DESIGN.md, "Device model and names"). Pure
// functions, any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/device.h"

namespace pcid {

// The socket directory the resource-name length rule is measured against. Fixed on purpose: a
// resource name must not change with the agent's --device-plugin-dir flag.
inline constexpr std::string_view kKubeletDevicePluginDir = "/var/lib/kubelet/device-plugins/";
// Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
inline constexpr size_t kMaxSocketPath = 107;

// `<node>-<address without ':' and '.'>`: ("testnode1", 0000:3f:06.3) -> "testnode1-00003f063".
std::string PciObjectName(std::string_view node, const PciAddress& address);

// `<node>-<vid>-<pid>-<BBB><DDD>`: "jacknode-0951-1666-002004"; `usb.name` when set (the
// name it was first seen under, kept across re-plug).
std::string UsbObjectName(std::string_view node, const UsbDevice& usb);

// `<subclass or class name>: <vendor> <device>` with lspci's fallbacks `Class XXYY`,
// `Vendor XXXX`, `Device XXXX`.
std::string PciDescription(const PciDevice& dev);

// `<vendor> <product>` with the fallbacks `Vendor XXXX`, `Device XXXX` (as lsusb prints them).
std::string UsbDescription(const UsbDevice& usb);

// Where a followed USB device is found again once unplugged (agent/usb_identity.h): "at port
// 0000:00:14.0-1", or "(serial 4C53, any port)" for a device with a serial.
std::string UsbWhereToPlug(const UsbDevice& usb);

// The vendor part of a resource name: "Advanced Micro Devices, Inc. [AMD/ATI]" -> "amd.com",
// "NVIDIA Corporation" -> "nvidia.com". An unknown (empty) vendor name gives "<vvvv>.com" rather
// than Harvester's "unknown.com", which would merge unrelated vendors into one resource.
std::string ResourceVendorPart(std::string_view vendor_name, uint16_t vendor_id);

// The device part: "GP106 [GeForce GTX 1060 3GB]" -> "GP106_GEFORCE_GTX_1060_3GB"; the 4-digit
// device ID when the name is empty or cleans to nothing.
std::string ResourceDevicePart(std::string_view device_name, uint16_t device_id);

// `<vendor part>/<device part>`, shortened as DESIGN.md says when the kubelet socket path
// `kubevirt-<vendor>-<device>.sock` would exceed 107 bytes: VIRTUAL_FUNCTION -> VF, then the ID.
std::string PciResourceName(const PciDevice& dev);

// "vvvv:dddd": vendor and device (or product) IDs as KubeVirt's selectors and the state file's
// intents write them.
std::string VendorDeviceIds(uint16_t vendor_id, uint16_t device_id);

// `kubevirt.io/<UsbObjectName>`.
std::string UsbResourceName(std::string_view node, const UsbDevice& usb);

// Device-plugin socket file name for a resource: "kubevirt-nvidia.com-GP106.sock".
std::string PluginSocketName(std::string_view resource_name);

}  // namespace pcid
