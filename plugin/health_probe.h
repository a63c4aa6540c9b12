// File: plugin/health_probe.h
//
// Collects the node facts health depends on (HealthInputs): which /dev/vfio/<group> nodes exist
// under the device root and each function's iommufd cdev (`vfio-dev/vfioN`). Reads only; owner
// thread.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/sysfs_root.h"
#include "plugin/resources.h"

namespace pcid::plugin {

HealthInputs ProbeHealth(const SysfsRoot& sysfs, const SysfsRoot& dev_root,
                         const std::vector<PciDevice>& pci, const std::set<std::string>& enabled);

// Re-probes only the functions in `changed` (and their groups), updating `inputs` in place: a
// hotplug event costs a few system calls, not a walk over every enabled function. Returns the
// groups whose /dev/vfio node came or went.
std::set<unsigned> ReprobeHealth(const SysfsRoot& sysfs, const SysfsRoot& dev_root,
                                 const std::vector<PciDevice>& pci,
                                 const std::set<std::string>& enabled,
                                 const std::set<std::string>& changed, HealthInputs& inputs);

}  // namespace pcid::plugin
