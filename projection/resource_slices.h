// File: projection/resource_slices.h
//
// Dynamic Resource Allocation: the ResourceSlices (resource.k8s.io/v1) that offer this node's DRA
// devices (the config's `dra` selectors) to the scheduler, one pool named after the node, driver
// `pcidevices.io` (DESIGN.md "Second wave"). Pure functions; the controller that writes them is
// ResourceSliceController (projection/controllers.h).
//
// Device names are DNS labels derived from what does not change across restarts: the PCI
// address ("pci-0000-81-00-0") or the USB port chain ("usb-0000-00-14-0-1-2"). Attributes follow
// KEP-4381's standard ones (resource.kubernetes.io/pciBusID, pcieRoot) and KEP-6072's numaNode;
// the rest are in the driver's own domain (unqualified names): IDs, class, IOMMU group, the
// device-plugin resource name the device would have, the driver in use, SR-IOV relations, and
// for USB vendor/product/serial/port.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/device.h"
#include "core/dra_driver.h"

namespace pcid::projection {

inline constexpr char kResourceApiPrefix[] = "/apis/resource.k8s.io/v1/";
inline constexpr char kResourceSlicePlural[] = "resourceslices";
// The API server's limit (ResourceSliceMaxDevices).
inline constexpr size_t kMaxDevicesPerSlice = 128;
// The label holding a slice's content hash: equal hash and generation = nothing to write.
inline constexpr char kSliceContentLabel[] = "pcidevices.io/content-hash";

std::string DraPciDeviceName(const PciAddress& address);
// kDraUsbPrefix + the port chain with every character outside [a-z0-9] turned into '-'.
inline constexpr char kDraUsbPrefix[] = "usb-";
std::string DraUsbDeviceName(const UsbDevice& usb);
// The root complex above a function, as the first element of its sysfs path names it
// ("pci0000:3a"): the bus of its topmost bridge, or its own bus on a root bus.
std::string PcieRoot(const std::vector<PciDevice>& sorted, const PciDevice& dev);

// One slice of the pool, before the pool's generation is known.
struct SliceContent {
  std::string name;          // "<node>-pcidevices.io-<index>"
  std::string devices_json;  // the spec's "devices" array
  std::string hash;          // 16 hex digits over devices_json and the pool's slice count
  std::vector<std::string> device_names;
};

// The pool's slices: `pci` (sorted by address) filtered to `dra_pci`, and the USB devices named
// in `dra_usb` (present ones only), at most kMaxDevicesPerSlice per slice, each slice's devices in
// name order. No devices: no slices.
//
// `previous` is the layout last written (or read back from the API server after a restart):
// each slice keeps the devices it had that are still offered, and a new device goes to the first
// slice with room, so that one device coming or going changes one slice, which is then written
// first (ResourceSliceController). When removals leave more slices than the devices need, the
// pool is laid out afresh in name order.
//
// `cache` (kept by the caller between calls) holds each PCI device's object as last built: a
// device equal to its entry, under the same root complex, is not built again (2,048 functions took
// 8 ms a change without it).
struct PoolDeviceCache {
  struct Entry {
    PciDevice device;
    std::string root;  // PcieRoot
    std::string name;  // DraPciDeviceName
    std::string json;  // the device's object
  };
  std::map<PciAddress, Entry> pci;
};
std::vector<SliceContent> PoolSlices(const std::string& node, const std::vector<PciDevice>& pci,
                                     const std::set<PciAddress>& dra_pci,
                                     const std::vector<UsbDevice>& usb,
                                     const std::set<std::string>& dra_usb,
                                     std::vector<SliceContent> previous = {},
                                     PoolDeviceCache* cache = nullptr);

// The index of a slice named "<node>-pcidevices.io-<index>", or nullopt for any other name.
std::optional<size_t> SliceIndex(const std::string& node, const std::string& slice_name);

// The whole object of one slice (for POST and PUT): `resource_version` set for a PUT,
// `node_uid` (when known) makes the Node its owner, so that it goes with the Node.
std::string SliceObject(const std::string& node, const std::string& node_uid,
                        const SliceContent& slice, int64_t generation, size_t slice_count,
                        std::string_view resource_version = "");

}  // namespace pcid::projection
