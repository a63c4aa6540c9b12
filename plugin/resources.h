// File: plugin/resources.h
//
// What the device plugins advertise, computed from a device snapshot: one resource per
// resourceName with its devices, their health and NUMA node, and what Allocate hands out for
// each. Pure functions over plain values: the owner thread gathers the inputs (snapshot, which
// /dev/vfio nodes exist, what the kubelet has allocated) and the gRPC servers only read results.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/device.h"

namespace pcid::plugin {

// A device node handed to a container: same path on the host and in the container.
struct DeviceNode {
  std::string path;  // host path, "/dev/vfio/12"
  std::string permissions = "mrw";
  friend bool operator==(const DeviceNode&, const DeviceNode&) = default;
};

struct PluginDevice {
  std::string id;  // PCI address "0000:01:00.0", or USB object name
  bool healthy = false;
  std::string health_reason;  // why not healthy, for logs and `doctor`
  int numa_node = -1;         // -1 = none (no topology sent)
  std::optional<unsigned> iommu_group;
  std::string env_value;          // PCI: the address; USB: "<bus>:<devnum>" in decimal
  std::vector<DeviceNode> nodes;  // without the shared /dev/vfio/vfio (added once per answer)
  bool usb = false;
  bool mdev = false;  // id and env value are the mdev's UUID
  friend bool operator==(const PluginDevice&, const PluginDevice&) = default;
};

struct Resource {
  std::string name;      // "nvidia.com/GP106_GEFORCE_GTX_1060_3GB"
  std::string env_name;  // "PCI_RESOURCE_NVIDIA_COM_GP106_GEFORCE_GTX_1060_3GB"
  bool usb = false;
  bool mdev = false;  // one mdev type's devices (MDEV_PCI_RESOURCE_...)
  // With mdev: NVIDIA VFs carrying one vendor vGPU type (PCI_RESOURCE_..., ids are addresses),
  // planned with the mdevs.
  bool vendor_vgpu = false;
  std::vector<PluginDevice> devices;  // sorted by id
  friend bool operator==(const Resource&, const Resource&) = default;
};

// Facts about the node the owner thread collects (I/O) before planning.
struct HealthInputs {
  std::set<unsigned> vfio_group_nodes;  // groups whose <dev-root>/vfio/<group> exists
  // <address> -> N for <sysfs>/bus/pci/devices/<address>/vfio-dev/vfioN (iommufd cdev).
  std::map<std::string, unsigned> vfio_cdevs;
  // Device IDs the kubelet reports as allocated, by the container holding them ("pod/container").
  std::map<std::string, std::string> allocated_to;
  // Functions unplugged while allocated: still listed, Unhealthy, until their pod is gone.
  std::set<std::string> removed;
};

// One IOMMU group as health sees it: its functions, and whether every endpoint is on vfio-pci
// (bridges keep their port driver, which the kernel allows).
struct IommuGroupHealth {
  std::vector<std::string> members;
  bool viable = true;
};
void AddGroupMember(const PciDevice& dev, IommuGroupHealth& group);

// An enabled PCI function as its plugin serves it; `groups` holds its IOMMU group's health (at
// least; by group number).
PluginDevice PlanPciDevice(const PciDevice& dev, const std::map<unsigned, IommuGroupHealth>& groups,
                           const HealthInputs& inputs);

// The USB resources alone (PlanResources' USB part).
std::map<std::string, Resource> PlanUsbResources(const std::vector<UsbDevice>& usb,
                                                 const std::set<std::string>& enabled_usb,
                                                 const std::string& node_name);

// The device `id` of `resource` (devices are sorted by id), or nullptr.
const PluginDevice* FindDevice(const Resource& resource, const std::string& id);

// `PCI_RESOURCE_` / `USB_RESOURCE_` + name upper-cased with '/' and '.' as '_' (KubeVirt's rule).
std::string ResourceEnvName(const std::string& resource_name, bool usb);
// The same with `MDEV_PCI_RESOURCE_`, for mdev types.
std::string MdevResourceEnvName(const std::string& resource_name);

// An mdev the agent keeps, as the owner thread knows it.
struct ServedMdev {
  std::string uuid;
  // Its type's resource name (MdevResourceName), as last seen: an mdev whose parent is gone
  // stays listed, Unhealthy, under the same resource.
  std::string resource;
  std::optional<unsigned> iommu_group;  // nullopt: the kernel has no such mdev now, or no group
  bool present = false;                 // bus/mdev/devices/<uuid> exists
  bool group_node = false;              // <dev-root>/vfio/<group> exists
  int numa_node = -1;                   // the parent's
  // An NVIDIA VF carrying a vendor vGPU type instead: `uuid` is its address, `present` that it
  // carries the recorded type; served under PCI_RESOURCE_ as a PCI device.
  bool vendor_vf = false;
  friend bool operator==(const ServedMdev&, const ServedMdev&) = default;
};

// One resource per mdev type: each mdev a device whose ID and environment value are its UUID,
// with /dev/vfio/<group>; healthy when it exists and so does its group's node. Vendor vGPU VFs
// the same, by address, under KubeVirt's PCI variable.
std::map<std::string, Resource> PlanMdevResources(const std::vector<ServedMdev>& served);

// Plans every resource for the enabled PCI functions (by address) and USB devices (by object
// name). A function is healthy only when it is on vfio-pci, its /dev/vfio/<group> exists, every
// function of its IOMMU group is on vfio-pci, and no other function of its group is allocated to
// a different container than the one holding it (DESIGN.md, "Health").
std::map<std::string, Resource> PlanResources(const std::vector<PciDevice>& pci,
                                              const std::vector<UsbDevice>& usb,
                                              const std::set<std::string>& enabled_pci,
                                              const std::set<std::string>& enabled_usb,
                                              const std::string& node_name,
                                              const HealthInputs& inputs);

}  // namespace pcid::plugin
