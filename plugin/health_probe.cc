#include "plugin/health_probe.h"

#include <absl/strings/match.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>

namespace pcid::plugin {

HealthInputs ProbeHealth(const SysfsRoot& sysfs, const SysfsRoot& dev_root,
                         const std::vector<PciDevice>& pci, const std::set<std::string>& enabled) {
  HealthInputs in;
  for (const PciDevice& dev : pci) {
    const std::string address = dev.address.ToString();
    if (!enabled.count(address) || !dev.iommu_group) continue;
    if (dev_root.Exists(absl::StrCat("vfio/", *dev.iommu_group))) {
      in.vfio_group_nodes.insert(*dev.iommu_group);
    }
    auto cdevs = sysfs.ListDir(absl::StrCat("bus/pci/devices/", address, "/vfio-dev"));
    if (!cdevs.ok()) continue;
    for (const std::string& name : *cdevs) {
      unsigned n;
      if (absl::StartsWith(name, "vfio") && absl::SimpleAtoi(name.substr(4), &n)) {
        in.vfio_cdevs[address] = n;
      }
    }
  }
  return in;
}

}  // namespace pcid::plugin
