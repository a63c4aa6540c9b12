// File: core/device.h
//
// The device model: plain values describing one PCI function or one USB device as discovered,
// names included. Produced by udev/ discovery, read by everything else. Thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/pci_address.h"
#include "core/shared_value.h"

namespace pcid {

// Names looked up in pci.ids / usb.ids; empty when the database has no entry.
struct DeviceNames {
  std::string vendor;
  std::string device;
  std::string class_name;
  std::string subclass_name;
  friend bool operator==(const DeviceNames&, const DeviceNames&) = default;
};

struct PciDevice {
  PciAddress address;
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_device_id = 0;
  uint8_t class_code = 0;  // base class, e.g. 0x03
  uint8_t subclass = 0;    // e.g. 0x00
  uint8_t prog_if = 0;
  uint8_t revision = 0;
  std::string driver;                   // "" = no driver bound
  std::optional<unsigned> iommu_group;  // absent when the kernel has no IOMMU group for it
  int numa_node = -1;                   // -1 = no node
  // SR-IOV: a PF has total_vfs (and num_vfs, virtual_functions); a VF has physical_function.
  std::optional<unsigned> sriov_total_vfs;
  std::optional<unsigned> sriov_num_vfs;
  std::optional<PciAddress> physical_function;
  std::vector<PciAddress> virtual_functions;  // ordered by virtfn index
  std::vector<std::string> net_interfaces;    // an SR-IOV network PF's interfaces (net/*), sorted
  std::optional<PciAddress> parent_bridge;    // the upstream bridge, absent on a root bus

  SharedValue<DeviceNames> names;  // shared by copies: see SharedValue

  // classId as in the CR: class + subclass, e.g. 0x0300.
  uint16_t class_id() const { return static_cast<uint16_t>(class_code << 8 | subclass); }
  friend bool operator==(const PciDevice&, const PciDevice&) = default;
  bool is_bridge() const { return class_code == 0x06; }
  bool is_pci_bridge() const;
};

// A PCI-to-PCI or CardBus bridge (header type 1 or 2, told by its class and subclass). The kernel
// lets these keep their port driver inside a viable vfio group; any other member (an ISA or host
// bridge included) must be on vfio-pci or driverless.
inline bool IsPciBridgeClass(uint8_t class_code, uint8_t subclass) {
  return class_code == 0x06 && (subclass == 0x04 || subclass == 0x07 || subclass == 0x09);
}
inline bool PciDevice::is_pci_bridge() const { return IsPciBridgeClass(class_code, subclass); }

// The function at `address` in `sorted` (ordered by address, as discovery returns them), or
// nullptr.
inline const PciDevice* FindPciDevice(const std::vector<PciDevice>& sorted,
                                      const PciAddress& address) {
  size_t lo = 0, hi = sorted.size();
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (sorted[mid].address < address) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < sorted.size() && sorted[lo].address == address ? &sorted[lo] : nullptr;
}

struct UsbDevice {
  unsigned bus = 0;     // busnum
  unsigned devnum = 0;  // devnum
  uint16_t vendor_id = 0;
  uint16_t product_id = 0;
  uint8_t device_class = 0;
  std::string sysfs_name;                     // "1-1.2"
  std::optional<PciAddress> host_controller;  // PCI address of the controller it hangs off
  DeviceNames names;                          // vendor = vendor name, device = product name
  // Identity across re-plug and reboot (bus and device numbers change at every plug):
  std::string serial;  // the device's iSerial string; "" when it has none
  // The physical port: the root hub's parent (host controller) and the port chain below it,
  // "0000:00:14.0-1.2"; a USB 3 root hub's ports are told apart from the USB 2 one's ("-usb3-").
  std::string port;
  // The USBDevice name when the device was first seen, kept while its identity (port, serial)
  // is followed (agent/usb_identity.h); "" = Harvester's name from today's bus and device number.
  std::string name;
  // False for a claimed device that is unplugged (orphaned): kept with what it was last seen as.
  bool present = true;

  friend bool operator==(const UsbDevice&, const UsbDevice&) = default;
  // "/dev/bus/usb/BBB/DDD", the host path (never prefixed with --dev-root).
  std::string DevicePath() const;
};

}  // namespace pcid
