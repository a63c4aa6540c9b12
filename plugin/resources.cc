#include "plugin/resources.h"

#include <absl/strings/ascii.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>

#include <algorithm>

#include "core/naming.h"
#include "core/status.h"

namespace pcid::plugin {
namespace {

constexpr char kVfioDriver[] = "vfio-pci";

// Each resource's devices in id order, as FindDevice and the kubelet's lists want them.
void SortById(std::map<std::string, Resource>& resources) {
  for (auto& [name, r] : resources) {
    std::sort(r.devices.begin(), r.devices.end(),
              [](const PluginDevice& a, const PluginDevice& b) { return a.id < b.id; });
  }
}

}  // namespace

void AddGroupMember(const PciDevice& dev, IommuGroupHealth& group) {
  group.members.push_back(dev.address.ToString());
  // DESIGN.md: every *endpoint* must be on vfio-pci; PCI bridges keep their port driver, which
  // the kernel allows in a vfio group (an ISA bridge on lpc_ich does make a group unviable).
  if (dev.driver != kVfioDriver && !dev.is_pci_bridge()) group.viable = false;
}

PluginDevice PlanPciDevice(const PciDevice& dev, const std::map<unsigned, IommuGroupHealth>& groups,
                           const HealthInputs& in) {
  const auto found = dev.iommu_group ? groups.find(*dev.iommu_group) : groups.end();
  const IommuGroupHealth* group = found == groups.end() ? nullptr : &found->second;
  PluginDevice out;
  out.id = dev.address.ToString();
  out.numa_node = dev.numa_node;
  out.iommu_group = dev.iommu_group;
  out.env_value = out.id;
  if (dev.iommu_group) out.nodes.push_back({absl::StrCat("/dev/vfio/", *dev.iommu_group)});
  if (auto cdev = in.vfio_cdevs.find(out.id); cdev != in.vfio_cdevs.end()) {
    out.nodes.push_back({absl::StrCat("/dev/vfio/devices/vfio", cdev->second)});
  }

  if (in.removed.count(out.id)) {
    out.health_reason = "removed from the node while allocated";
  } else if (dev.driver != kVfioDriver) {
    out.health_reason = dev.driver.empty()
                            ? "no driver bound, want vfio-pci"
                            : absl::StrCat("bound to ", dev.driver, ", want vfio-pci");
  } else if (!dev.iommu_group || !group) {
    out.health_reason = "no IOMMU group";
  } else if (!in.vfio_group_nodes.count(*dev.iommu_group)) {
    out.health_reason = absl::StrCat("/dev/vfio/", *dev.iommu_group, " missing");
  } else if (!group->viable) {
    out.health_reason =
        absl::StrCat("IOMMU group ", *dev.iommu_group, " not viable: a member is not on vfio-pci");
  } else {
    const auto mine = in.allocated_to.find(out.id);
    for (const std::string& member : group->members) {
      const auto holder = in.allocated_to.find(member);
      if (member == out.id || holder == in.allocated_to.end()) continue;
      if (mine == in.allocated_to.end() || mine->second != holder->second) {
        out.health_reason = absl::StrCat("IOMMU group ", *dev.iommu_group, " member ", member,
                                         " is held by ", holder->second);
        break;
      }
    }
  }
  out.healthy = out.health_reason.empty();
  return out;
}

const PluginDevice* FindDevice(const Resource& resource, const std::string& id) {
  auto it = std::lower_bound(resource.devices.begin(), resource.devices.end(), id,
                             [](const PluginDevice& d, const std::string& k) { return d.id < k; });
  return it != resource.devices.end() && it->id == id ? &*it : nullptr;
}

namespace {

std::string EnvName(std::string_view prefix, const std::string& resource_name) {
  std::string suffix = absl::AsciiStrToUpper(resource_name);
  std::replace(suffix.begin(), suffix.end(), '/', '_');
  std::replace(suffix.begin(), suffix.end(), '.', '_');
  return absl::StrCat(ToAbsl(prefix), suffix);
}

}  // namespace

std::string ResourceEnvName(const std::string& resource_name, bool usb) {
  return EnvName(usb ? "USB_RESOURCE_" : "PCI_RESOURCE_", resource_name);
}

std::string MdevResourceEnvName(const std::string& resource_name) {
  return EnvName("MDEV_PCI_RESOURCE_", resource_name);
}

std::map<std::string, Resource> PlanMdevResources(const std::vector<ServedMdev>& served) {
  std::map<std::string, Resource> resources;
  for (const ServedMdev& m : served) {
    Resource& r = resources[m.resource];
    if (r.name.empty()) {
      r.name = m.resource;
      r.env_name =
          m.vendor_vf ? ResourceEnvName(m.resource, false) : MdevResourceEnvName(m.resource);
      r.mdev = true;
      r.vendor_vgpu = m.vendor_vf;
    }
    PluginDevice d;
    d.id = m.uuid;
    d.env_value = m.uuid;
    d.numa_node = m.numa_node;
    d.iommu_group = m.iommu_group;
    d.mdev = !m.vendor_vf;
    if (m.iommu_group) d.nodes.push_back({absl::StrCat("/dev/vfio/", *m.iommu_group)});
    if (!m.present && m.vendor_vf) {
      d.health_reason = "VF missing, or not carrying its vGPU type (yet)";
    } else if (!m.present) {
      d.health_reason = "mdev missing (its parent gone or not yet back)";
    } else if (!m.iommu_group) {
      d.health_reason = "mdev has no IOMMU group";
    } else if (!m.group_node) {
      d.health_reason = absl::StrCat("/dev/vfio/", *m.iommu_group, " missing");
    }
    d.healthy = d.health_reason.empty();
    r.devices.push_back(std::move(d));
  }
  for (auto& [name, r] : resources) {
    std::sort(r.devices.begin(), r.devices.end(),
              [](const PluginDevice& a, const PluginDevice& b) { return a.id < b.id; });
  }
  return resources;
}

std::map<std::string, Resource> PlanUsbResources(const std::vector<UsbDevice>& usb,
                                                 const std::set<std::string>& enabled_usb,
                                                 const std::string& node_name) {
  std::map<std::string, Resource> resources;
  for (const UsbDevice& dev : usb) {
    const std::string object = UsbObjectName(node_name, dev);
    if (!enabled_usb.count(object)) continue;
    const std::string name = UsbResourceName(node_name, dev);
    Resource& r = resources[name];
    r.name = name;
    r.usb = true;
    r.env_name = ResourceEnvName(name, true);
    PluginDevice d;
    d.id = object;
    d.usb = true;
    // An orphaned device (enabled, unplugged) stays listed, Unhealthy, under its kept ID: the
    // kubelet keeps the resource, and the device is Healthy again when it is plugged back in.
    d.healthy = dev.present;
    if (!dev.present) d.health_reason = "unplugged (orphaned)";
    d.env_value = absl::StrFormat("%u:%u", dev.bus, dev.devnum);
    d.nodes.push_back({dev.DevicePath()});
    r.devices.push_back(std::move(d));
  }
  SortById(resources);
  return resources;
}

std::map<std::string, Resource> PlanResources(const std::vector<PciDevice>& pci,
                                              const std::vector<UsbDevice>& usb,
                                              const std::set<std::string>& enabled_pci,
                                              const std::set<std::string>& enabled_usb,
                                              const std::string& node_name,
                                              const HealthInputs& inputs) {
  std::map<unsigned, IommuGroupHealth> groups;
  for (const PciDevice& dev : pci) {
    if (dev.iommu_group) AddGroupMember(dev, groups[*dev.iommu_group]);
  }
  std::map<std::string, Resource> resources;
  for (const PciDevice& dev : pci) {
    if (!enabled_pci.count(dev.address.ToString())) continue;
    const std::string name = PciResourceName(dev);
    Resource& r = resources[name];
    r.name = name;
    r.env_name = ResourceEnvName(name, false);
    r.devices.push_back(PlanPciDevice(dev, groups, inputs));
  }
  SortById(resources);
  resources.merge(PlanUsbResources(usb, enabled_usb, node_name));
  return resources;
}

}  // namespace pcid::plugin
