// File: udev/discovery.h
//
// Device discovery: reads every PCI function and USB device from a sysfs tree (the real /sys or a
// fixture) into the core device model, names included. A device whose required attributes are
// missing or garbled is logged and skipped; optional attributes that are garbled are logged and
// left at their "unknown" value. Nothing here throws or writes.
//
// Why sysfs and not libudev/libusb for enumeration: neither can be pointed at another root
// (libudev reads /sys, libusb opens /dev/bus/usb and needs the nodes), and both would only wrap
// the same sysfs reads. libudev is used for what only it offers: the uevent monitor.
//
// Functions are reentrant; each call reads the tree afresh.
#pragma once

#include <absl/status/statusor.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/device.h"
#include "core/id_database.h"
#include "core/mdev.h"
#include "core/sysfs_root.h"

namespace spdlog {
class logger;
}

namespace pcid::udev {

// One PCI function, `address` validated first (InvalidArgument before any path is built).
// Names are filled from `pci_ids` when it is non-null. A PF's VFs come from its virtfnN links,
// in index order.
absl::StatusOr<PciDevice> ReadPciDevice(const SysfsRoot& sysfs, std::string_view address,
                                        const IdDatabase* pci_ids, spdlog::logger& log);

// The driver a function is bound to right now, from its `driver` link (the kernel's own word; not
// the uevent summary): "" when unbound. InvalidArgument for a bad address, NotFound when the
// function is gone.
absl::StatusOr<std::string> ReadPciDriver(const SysfsRoot& sysfs, std::string_view address);

// Every function under `bus/pci/devices`, sorted by address. NotFound when that directory is
// missing; bad devices are skipped with a warning. A PF's VFs come from the VFs' physfn links, in
// address order (the virtfnN order on real hardware). Large trees are read by up to four threads,
// so `log` must accept concurrent calls (spdlog loggers with *_mt sinks do).
absl::StatusOr<std::vector<PciDevice>> DiscoverPciDevices(const SysfsRoot& sysfs,
                                                          const IdDatabase* pci_ids,
                                                          spdlog::logger& log);

// One USB device, `name` being its sysfs name ("usb1", "1-1.2").
absl::StatusOr<UsbDevice> ReadUsbDevice(const SysfsRoot& sysfs, std::string_view name,
                                        const IdDatabase* usb_ids, spdlog::logger& log);

// Vendor, product and class names of `usb` from usb.ids (none when `usb_ids` is null).
void LookUpUsbNames(UsbDevice& usb, const IdDatabase* usb_ids);

// Every USB device (hubs included, interfaces excluded) under `bus/usb/devices`, sorted by bus
// and device number. An absent `bus/usb` means no USB: an empty list, not an error.
absl::StatusOr<std::vector<UsbDevice>> DiscoverUsbDevices(const SysfsRoot& sysfs,
                                                          const IdDatabase* usb_ids,
                                                          spdlog::logger& log);

// True for a USB device name as sysfs spells it: "usbN" or "B-P[.P...]" (no interfaces).
bool IsUsbDeviceName(std::string_view name);

// Mediated devices: every parent under `class/mdev_bus` with its types
// (`mdev_supported_types/<id>/{name, description, available_instances, device_api}`), every mdev
// under `bus/mdev/devices` (parent from where its directory sits, type from its `mdev_type` link,
// IOMMU group and driver from their links). A node without mdev support (no class/mdev_bus, no
// bus/mdev) has none: an empty inventory, not an error. Garbled entries are logged and skipped.
// Cheap (a few directory reads): the agent reads it again at every change.
absl::StatusOr<MdevInventory> DiscoverMdevs(const SysfsRoot& sysfs, spdlog::logger& log);

// Every PCI function with NVIDIA's `nvidia/creatable_vgpu_types` into `inventory.vendor_vgpus`:
// a look at every function, so not at every change.
absl::Status DiscoverVendorVgpus(const SysfsRoot& sysfs, spdlog::logger& log,
                                 MdevInventory& inventory);
// The same for the functions `only` (the agent's: its NVIDIA functions, at every change).
void DiscoverVendorVgpusOf(const SysfsRoot& sysfs, spdlog::logger& log,
                           const std::vector<PciAddress>& only, MdevInventory& inventory);

}  // namespace pcid::udev
