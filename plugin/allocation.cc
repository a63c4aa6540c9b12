#include "plugin/allocation.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>

#include <algorithm>
#include <set>

namespace pcid::plugin {
namespace {

void AddNode(std::vector<DeviceNode>& nodes, const DeviceNode& node) {
  if (std::find(nodes.begin(), nodes.end(), node) == nodes.end()) nodes.push_back(node);
}

}  // namespace

absl::StatusOr<ContainerAllocation> PlanAllocation(const Resource& resource,
                                                   const std::vector<std::string>& ids) {
  if (ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(resource.name, ": no devices requested"));
  }
  ContainerAllocation out;
  std::set<std::string> seen;
  std::vector<std::string> values;
  if (!resource.usb) AddNode(out.nodes, {"/dev/vfio/vfio"});
  for (const std::string& id : ids) {
    const PluginDevice* dev = FindDevice(resource, id);
    if (dev == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(resource.name, ": unknown device \"", id, "\""));
    }
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(resource.name, ": device ", id, " requested twice"));
    }
    if (!dev->healthy) {
      return absl::FailedPreconditionError(
          absl::StrCat(resource.name, ": device ", id, " is unhealthy: ", dev->health_reason));
    }
    values.push_back(dev->env_value);
    for (const DeviceNode& node : dev->nodes) AddNode(out.nodes, node);
  }
  out.envs[resource.env_name] = absl::StrJoin(values, ",");
  return out;
}

std::vector<std::string> PreferredAllocation(const Resource& resource,
                                             const std::vector<std::string>& available,
                                             const std::vector<std::string>& must_include,
                                             size_t size) {
  std::vector<std::string> chosen;
  std::set<std::string> taken;
  auto take = [&](const std::string& id) {
    if (chosen.size() < size && taken.insert(id).second) chosen.push_back(id);
  };
  std::vector<const PluginDevice*> pool;
  for (const std::string& id : available) {
    if (const PluginDevice* d = FindDevice(resource, id); d && d->healthy) pool.push_back(d);
  }
  std::sort(pool.begin(), pool.end(),
            [](const PluginDevice* a, const PluginDevice* b) { return a->id < b->id; });
  pool.erase(std::unique(pool.begin(), pool.end()), pool.end());

  std::map<int, int> per_numa;
  for (const PluginDevice* d : pool) ++per_numa[d->numa_node];
  int numa = -2;  // no preference yet
  for (const std::string& id : must_include) {
    if (const PluginDevice* d = FindDevice(resource, id); d && numa == -2) numa = d->numa_node;
    take(id);
  }
  if (numa == -2 && !per_numa.empty()) {
    numa = std::max_element(per_numa.begin(), per_numa.end(), [](auto& a, auto& b) {
             return a.second < b.second;
           })->first;
  }

  // Groups among the available devices (a device without one is a group of its own).
  auto group_key = [](const PluginDevice* d) {
    return d->iommu_group ? absl::StrCat("g", *d->iommu_group) : absl::StrCat("d", d->id);
  };
  std::map<std::string, std::vector<const PluginDevice*>> groups;
  for (const PluginDevice* d : pool) groups[group_key(d)].push_back(d);
  // 1. Complete the groups the must-include devices opened.
  for (const std::string& id : must_include) {
    if (const PluginDevice* d = FindDevice(resource, id); d && groups.count(group_key(d))) {
      for (const PluginDevice* m : groups[group_key(d)]) take(m->id);
    }
  }
  // 2. Whole groups that fit, preferred NUMA node first, then larger groups, then by ID.
  std::vector<const std::vector<const PluginDevice*>*> order;
  for (auto& [key, members] : groups) order.push_back(&members);
  std::stable_sort(order.begin(), order.end(), [&](auto* a, auto* b) {
    const bool a_here = a->front()->numa_node == numa, b_here = b->front()->numa_node == numa;
    if (a_here != b_here) return a_here;
    return a->size() > b->size();
  });
  for (auto* members : order) {
    size_t fresh = 0;
    for (const PluginDevice* m : *members) fresh += taken.count(m->id) ? 0 : 1;
    if (fresh == 0 || chosen.size() + fresh > size) continue;
    for (const PluginDevice* m : *members) take(m->id);
  }
  // 3. Whatever is left, preferred NUMA node first.
  for (bool here : {true, false}) {
    for (const PluginDevice* d : pool) {
      if ((d->numa_node == numa) == here) take(d->id);
    }
  }
  return chosen;
}

}  // namespace pcid::plugin
