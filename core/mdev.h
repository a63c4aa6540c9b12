// File: core/mdev.h
//
// Mediated devices (mdevs) as discovered: the parents that offer them (a PCI function or a
// virtual device under class/mdev_bus), each parent's types, the mdevs that exist, and NVIDIA's
// vendor-specific vGPU files on VFs (which carry a vGPU type without any mdev). Plain values,
// produced by udev/ discovery; the names and checks every module shares are here too.
// Thread-compatible.
#pragma once

#include <absl/status/statusor.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/pci_address.h"

namespace pcid {

struct MdevType {
  std::string id;           // the type directory's name: "mtty-2", "nvidia-746"
  std::string name;         // its `name` file ("NVIDIA A2-4Q"); the id when there is none
  std::string description;  // "" when the driver offers none
  std::string device_api;   // "vfio-pci"
  unsigned available_instances = 0;
  friend bool operator==(const MdevType&, const MdevType&) = default;
};

struct MdevParent {
  std::string name;                       // as under class/mdev_bus: "0000:08:01.7", "mtty"
  std::optional<PciAddress> pci_address;  // when the parent is a PCI function
  std::vector<MdevType> types;            // ordered by id
  friend bool operator==(const MdevParent&, const MdevParent&) = default;
  const MdevType* FindType(std::string_view id) const;
};

struct Mdev {
  std::string uuid;    // lower case, as the kernel names it
  std::string parent;  // the parent's name under class/mdev_bus
  std::string type;    // the type's id
  std::optional<unsigned> iommu_group;
  std::string driver;  // "" = none bound
  friend bool operator==(const Mdev&, const Mdev&) = default;
};

// A VF whose driver offers vGPU types itself (NVIDIA on kernel 6.8+: `nvidia/creatable_vgpu_types`
// and `nvidia/current_vgpu_type`); the VF is then passed through as a PCI device.
struct VendorVgpu {
  PciAddress address;
  std::map<std::string, std::string>
      creatable;             // type name -> type id: "NVIDIA L40S-12A" -> "1163"
  std::string current_type;  // the type id set now; "" = none
  friend bool operator==(const VendorVgpu&, const VendorVgpu&) = default;
};

struct MdevInventory {
  std::vector<MdevParent> parents;       // ordered by name
  std::vector<Mdev> mdevs;               // ordered by uuid
  std::vector<VendorVgpu> vendor_vgpus;  // ordered by address
  friend bool operator==(const MdevInventory&, const MdevInventory&) = default;
  const MdevParent* FindParent(std::string_view name) const;
  const Mdev* FindMdev(std::string_view uuid) const;
  const VendorVgpu* FindVendorVgpu(const PciAddress& address) const;
};

// A UUID as the kernel's `create` takes it and names the mdev: 8-4-4-4-12 hex digits, returned in
// lower case ("%pUl"). InvalidArgument naming the text otherwise.
absl::StatusOr<std::string> ParseUuid(std::string_view text);

// A fresh random (version 4) UUID in lower case, from the kernel's random source.
std::string NewRandomUuid();

// True for a name that is safe as one path component below class/mdev_bus: a parent name or a
// type id ("mtty-2", "nvidia-746", "0000:08:01.7"): letters, digits and "-_.:", not starting with
// a dot, at most 64 characters. Never "/" or "..".
bool IsMdevComponent(std::string_view name);

// The resource name a type is served under, as Harvester and KubeVirt name vGPU types: the type's
// name with white space runs, "/" and "." made "_", after "nvidia.com/" for NVIDIA's types (ids
// "nvidia-N": "NVIDIA A2-4Q" -> "nvidia.com/NVIDIA_A2-4Q") and "pcidevices.io/" for any other
// ("mbochs-small" -> "pcidevices.io/mbochs-small"). Characters a resource name cannot hold are
// dropped, and it is cut to 63 characters after the "/".
std::string MdevResourceName(const MdevType& type);
// The same for a type known by its id alone (its parent is not there to give its name).
std::string MdevResourceNameOfId(std::string_view type_id);

// NVIDIA's `creatable_vgpu_types` text ("ID    : vGPU Name" then "1145  : NVIDIA L40S-1B", ...):
// name -> id; lines that are not a number, a colon and a name are skipped (the header too).
std::map<std::string, std::string> ParseCreatableVgpuTypes(std::string_view text);

// The parent's name from the target of an mdev's bus/mdev/devices/<uuid> link: its directory
// sits in its parent's (".../devices/virtual/mtty/mtty/<uuid>" -> "mtty"). nullopt when the
// target does not end in `uuid` below a name IsMdevComponent accepts.
std::optional<std::string> MdevParentOfLink(std::string_view target, std::string_view uuid);

}  // namespace pcid
