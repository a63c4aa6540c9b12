// File: plugin/allocation.h
//
// The answers of Allocate and GetPreferredAllocation for one resource, as plain values; the gRPC
// adapter copies them into the kubelet's messages. Pure functions, any thread.
#pragma once

#include <absl/status/statusor.h>

#include <map>
#include <string>
#include <vector>

#include "plugin/resources.h"

namespace pcid::plugin {

struct ContainerAllocation {
  std::map<std::string, std::string> envs;  // PCI_RESOURCE_<...> = "addr1,addr2"
  std::vector<DeviceNode> nodes;            // host path = container path
};

// Allocate for one container: every ID must be known, healthy and requested once; otherwise
// InvalidArgument / FailedPrecondition naming the ID, and no partial answer. PCI answers carry
// /dev/vfio/vfio once, each IOMMU group node once, and the iommufd cdevs.
absl::StatusOr<ContainerAllocation> PlanAllocation(const Resource& resource,
                                                   const std::vector<std::string>& ids);

// GetPreferredAllocation: `size` IDs from `available`, including `must_include`, preferring
// whole IOMMU groups, then devices on one NUMA node (the must-include devices' node, else the
// node with most available devices). Unknown and unhealthy IDs are not offered; fewer than
// `size` when short.
std::vector<std::string> PreferredAllocation(const Resource& resource,
                                             const std::vector<std::string>& available,
                                             const std::vector<std::string>& must_include,
                                             size_t size);

}  // namespace pcid::plugin
