#include "plugin/resource_planner.h"

#include <algorithm>

#include "core/naming.h"

namespace pcid::plugin {
namespace {

// Calls `f` with the key of every element in one of two sorted containers (sets, or maps by
// key) and not the other, or in both but different; true if any.
template <typename C, typename Key, typename F>
bool ForEachChanged(const C& a, const C& b, Key key, F f) {
  bool any = false;
  auto i = a.begin();
  auto j = b.begin();
  while (i != a.end() || j != b.end()) {
    if (j == b.end() || (i != a.end() && key(*i) < key(*j))) {
      f(key(*i++));
      any = true;
    } else if (i == a.end() || key(*j) < key(*i)) {
      f(key(*j++));
      any = true;
    } else {
      if (*i != *j) {
        f(key(*i));
        any = true;
      }
      ++i;
      ++j;
    }
  }
  return any;
}
const auto kElement = [](const auto& e) -> const auto& { return e; };
const auto kMapKey = [](const auto& e) -> const auto& { return e.first; };

// Where the device `id` is, or belongs, in devices sorted by id.
std::vector<PluginDevice>::iterator Place(std::vector<PluginDevice>& devices,
                                          const std::string& id) {
  return std::lower_bound(devices.begin(), devices.end(), id,
                          [](const PluginDevice& d, const std::string& k) { return d.id < k; });
}

}  // namespace

void ResourcePlanner::FindChanges(const std::set<std::string>& enabled_pci,
                                  const HealthInputs& inputs, std::set<PciAddress>& dirty,
                                  std::set<unsigned>& dirty_groups) {
  auto mark = [&dirty](const std::string& id) {
    if (auto address = ParsePciAddress(id); address.ok()) dirty.insert(*address);
  };
  // Each kept copy is replaced only when it differs: most plans follow a change of one input.
  if (ForEachChanged(enabled_pci_, enabled_pci, kElement, mark)) enabled_pci_ = enabled_pci;
  if (ForEachChanged(inputs_.removed, inputs.removed, kElement, mark))
    inputs_.removed = inputs.removed;
  if (ForEachChanged(inputs_.allocated_to, inputs.allocated_to, kMapKey, mark)) {
    inputs_.allocated_to = inputs.allocated_to;
  }
  if (ForEachChanged(inputs_.vfio_cdevs, inputs.vfio_cdevs, kMapKey, mark)) {
    inputs_.vfio_cdevs = inputs.vfio_cdevs;
  }
  if (ForEachChanged(inputs_.vfio_group_nodes, inputs.vfio_group_nodes, kElement,
                     [&dirty_groups](unsigned g) { dirty_groups.insert(g); })) {
    inputs_.vfio_group_nodes = inputs.vfio_group_nodes;
  }
}

void ResourcePlanner::PlanUsb(const std::vector<UsbDevice>& usb,
                              const std::set<std::string>& enabled_usb,
                              const std::string& node_name, std::set<std::string>& changed) {
  auto now = PlanUsbResources(usb, enabled_usb, node_name);
  for (auto it = plan_.begin(); it != plan_.end();) {
    if (it->second.usb && !now.count(it->first)) {
      changed.insert(it->first);
      it = plan_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [name, r] : now) {
    auto [it, added] = plan_.try_emplace(name);
    if (!added && it->second == r) continue;
    it->second = std::move(r);
    changed.insert(name);
  }
}

std::set<std::string> ResourcePlanner::Plan(const std::vector<PciDevice>& pci,
                                            const std::vector<UsbDevice>& usb,
                                            const std::set<std::string>& enabled_pci,
                                            const std::set<std::string>& enabled_usb,
                                            const std::string& node_name,
                                            const HealthInputs& inputs, size_t max_functions) {
  if (all_) {
    // Every function there is, and every one planned or grouped before (gone ones leave).
    all_ = false;
    for (const PciDevice& d : pci) marked_.insert(d.address);
    for (const auto& [address, name] : resource_of_) marked_.insert(address);
    for (const auto& [address, group] : group_of_) marked_.insert(address);
  }
  std::set<PciAddress> dirty = std::move(marked_);
  marked_.clear();
  std::set<unsigned> dirty_groups;
  FindChanges(enabled_pci, inputs, dirty, dirty_groups);

  // A changed function's group, before and after, is planned again whole: viability and
  // group-mates' holders are part of each member's health.
  for (const PciAddress& a : dirty) {
    if (auto old = group_of_.find(a); old != group_of_.end()) dirty_groups.insert(old->second);
    if (const PciDevice* d = FindPciDevice(pci, a); d && d->iommu_group) {
      dirty_groups.insert(*d->iommu_group);
    }
  }
  std::map<unsigned, IommuGroupHealth> groups;
  std::set<PciAddress> affected = dirty;
  if (!dirty_groups.empty()) {
    for (const PciDevice& d : pci) {
      if (!d.iommu_group || !dirty_groups.count(*d.iommu_group)) continue;
      AddGroupMember(d, groups[*d.iommu_group]);
      affected.insert(d.address);
    }
  }

  std::set<std::string> changed;
  size_t planned = 0;
  for (auto next = affected.begin(); next != affected.end(); ++next) {
    if (planned++ == max_functions) {
      marked_.insert(next, affected.end());  // the next call's
      break;
    }
    const PciAddress& a = *next;
    const PciDevice* dev = FindPciDevice(pci, a);
    const std::string id = a.ToString();
    if (dev && dev->iommu_group) {
      group_of_[a] = *dev->iommu_group;
    } else {
      group_of_.erase(a);
    }
    // Its place before: taken out of its resource, kept to compare.
    std::optional<PluginDevice> before;
    std::string before_name;
    if (auto it = resource_of_.find(a); it != resource_of_.end()) {
      before_name = it->second;
      resource_of_.erase(it);
      auto& devices = plan_[before_name].devices;
      auto pos = Place(devices, id);
      if (pos != devices.end() && pos->id == id) {
        before = std::move(*pos);
        devices.erase(pos);
      }
    }
    std::string name;
    if (dev && enabled_pci.count(id)) {
      name = PciResourceName(*dev);
      PluginDevice now = PlanPciDevice(*dev, groups, inputs);
      if (name != before_name || !before || *before != now) {
        changed.insert(name);
        if (!before_name.empty()) changed.insert(before_name);
      }
      Resource& r = plan_[name];
      if (r.name.empty()) {
        r.name = name;
        r.env_name = ResourceEnvName(name, false);
      }
      r.devices.insert(Place(r.devices, id), std::move(now));
      resource_of_[a] = name;
    } else if (!before_name.empty()) {
      changed.insert(before_name);
    }
  }
  for (const std::string& name : changed) {
    if (auto it = plan_.find(name); it != plan_.end() && it->second.devices.empty()) {
      plan_.erase(it);
    }
  }
  PlanUsb(usb, enabled_usb, node_name, changed);
  return changed;
}

}  // namespace pcid::plugin
