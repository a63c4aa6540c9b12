#include "plugin/health_probe.h"

#include <absl/strings/match.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>

namespace pcid::plugin {

namespace {

void ProbeOne(const SysfsRoot& sysfs, const SysfsRoot& dev_root, const PciDevice& dev,
              HealthInputs& in) {
  const std::string address = dev.address.ToString();
  if (dev_root.Exists(absl::StrCat("vfio/", *dev.iommu_group))) {
    in.vfio_group_nodes.insert(*dev.iommu_group);
  }
  auto cdevs = sysfs.ListDir(absl::StrCat("bus/pci/devices/", address, "/vfio-dev"));
  if (!cdevs.ok()) return;
  for (const std::string& name : *cdevs) {
    unsigned n;
    // Kernels before 6.6 list vfio-dev/vfioN without a character device (no
    // CONFIG_VFIO_DEVICE_CDEV): offer only nodes that exist, or the runtime fails the container.
    if (absl::StartsWith(name, "vfio") && absl::SimpleAtoi(name.substr(4), &n) &&
        dev_root.Exists(absl::StrCat("vfio/devices/", name))) {
      in.vfio_cdevs[address] = n;
    }
  }
}

}  // namespace

HealthInputs ProbeHealth(const SysfsRoot& sysfs, const SysfsRoot& dev_root,
                         const std::vector<PciDevice>& pci, const std::set<std::string>& enabled) {
  HealthInputs in;
  for (const PciDevice& dev : pci) {
    if (enabled.count(dev.address.ToString()) && dev.iommu_group)
      ProbeOne(sysfs, dev_root, dev, in);
  }
  return in;
}

std::set<unsigned> ReprobeHealth(const SysfsRoot& sysfs, const SysfsRoot& dev_root,
                                 const std::vector<PciDevice>& pci,
                                 const std::set<std::string>& enabled,
                                 const std::set<std::string>& changed, HealthInputs& inputs) {
  std::set<unsigned> nodes_changed;
  for (const std::string& address : changed) inputs.vfio_cdevs.erase(address);
  for (const PciDevice& dev : pci) {
    const std::string address = dev.address.ToString();
    if (!changed.count(address) || !dev.iommu_group) continue;
    // The group node may have come or gone with this function, whoever else is in the group.
    const unsigned g = *dev.iommu_group;
    const bool had = inputs.vfio_group_nodes.erase(g) != 0;
    const bool has = dev_root.Exists(absl::StrCat("vfio/", g));
    if (has) inputs.vfio_group_nodes.insert(g);
    if (has != had) nodes_changed.insert(g);
    if (enabled.count(address)) ProbeOne(sysfs, dev_root, dev, inputs);
  }
  return nodes_changed;
}

}  // namespace pcid::plugin
