#include "plugin/resource_planner.h"

#include <algorithm>

#include "core/naming.h"
#include "core/sorted_diff.h"

namespace pcid::plugin {
namespace {

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
  // The kept copies are patched, not replaced: most plans follow a change of one element.
  SyncChanged(inputs_.removed, inputs.removed, mark);
  SyncChanged(inputs_.allocated_to, inputs.allocated_to, mark);
  // The node-sized inputs are compared whole only when the caller did not mark their changes (a
  // walk over thousands of tree nodes costs a fraction of a millisecond, every plan). Otherwise
  // their kept copies are brought up to date element by element as functions are planned
  // (KeepInputs), so that a later comparison finds only what was not marked.
  if (!compare_all_) return;
  compare_all_ = false;
  SyncChanged(enabled_pci_, enabled_pci, mark);
  SyncChanged(inputs_.vfio_cdevs, inputs.vfio_cdevs, mark);
  SyncChanged(inputs_.vfio_group_nodes, inputs.vfio_group_nodes,
              [&dirty_groups](unsigned g) { dirty_groups.insert(g); });
}

void ResourcePlanner::KeepInputs(const std::string& id, const std::set<std::string>& enabled_pci,
                                 const HealthInputs& inputs) {
  CopyElement(enabled_pci_, enabled_pci, id);
  CopyElement(inputs_.vfio_cdevs, inputs.vfio_cdevs, id);
}

void ResourcePlanner::PlanUsb(const std::vector<UsbDevice>& usb,
                              const std::set<std::string>& enabled_usb,
                              const std::string& node_name, std::set<std::string>& changed) {
  ReplaceKind(
      PlanUsbResources(usb, enabled_usb, node_name), [](const Resource& r) { return r.usb; },
      changed);
}

template <typename IsKind>
void ResourcePlanner::ReplaceKind(std::map<std::string, Resource> now, IsKind is_kind,
                                  std::set<std::string>& changed) {
  for (auto it = plan_.begin(); it != plan_.end();) {
    if (is_kind(it->second) && !now.count(it->first)) {
      changed.insert(it->first);
      it = plan_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [name, r] : now) {
    auto [it, added] = plan_.try_emplace(name);
    if (!added && !is_kind(it->second)) continue;  // another kind's name: first come keeps it
    if (!added && it->second == r) continue;
    it->second = std::move(r);
    changed.insert(name);
  }
}

std::set<std::string> ResourcePlanner::PlanMdevs(std::map<std::string, Resource> now) {
  std::set<std::string> changed;
  ReplaceKind(
      std::move(now), [](const Resource& r) { return r.mdev; }, changed);
  return changed;
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
    compare_all_ = true;  // and the kept inputs brought up to date
    for (const PciDevice& d : pci) marked_.insert(d.address);
    for (const auto& [address, name] : resource_of_) marked_.insert(address);
    for (const auto& [address, group] : group_of_) marked_.insert(address);
  }
  std::set<PciAddress> dirty = std::move(marked_);
  marked_.clear();
  std::set<unsigned> node_groups = std::move(marked_groups_);
  marked_groups_.clear();
  FindChanges(enabled_pci, inputs, dirty, node_groups);
  // A group whose /dev/vfio node came or went: each of its functions is planned again.
  if (!node_groups.empty()) {
    for (const PciDevice& d : pci) {
      if (d.iommu_group && node_groups.count(*d.iommu_group)) dirty.insert(d.address);
    }
  }

  // This call's share, the first `max_functions` (the rest stay marked), each with its group,
  // before and after, whole: viability and group-mates' holders are part of each member's
  // health. Taken before widening, so that a slice costs its own functions, not the rest.
  std::set<PciAddress> affected;
  std::set<unsigned> dirty_groups;
  while (!dirty.empty() && affected.size() < max_functions) {
    const PciAddress a = std::move(dirty.extract(dirty.begin()).value());
    if (auto old = group_of_.find(a); old != group_of_.end()) dirty_groups.insert(old->second);
    if (const PciDevice* d = FindPciDevice(pci, a); d && d->iommu_group) {
      dirty_groups.insert(*d->iommu_group);
    }
    affected.insert(a);
  }
  std::map<unsigned, IommuGroupHealth> groups;
  if (!dirty_groups.empty()) {
    for (const PciDevice& d : pci) {
      if (!d.iommu_group || !dirty_groups.count(*d.iommu_group)) continue;
      AddGroupMember(d, groups[*d.iommu_group]);
      affected.insert(d.address);
      dirty.erase(d.address);  // planned now, with its group
    }
  }
  marked_ = std::move(dirty);  // the next call's
  for (unsigned g : dirty_groups) CopyElement(inputs_.vfio_group_nodes, inputs.vfio_group_nodes, g);

  std::set<std::string> changed;
  for (auto next = affected.begin(); next != affected.end(); ++next) {
    const PciAddress& a = *next;
    const PciDevice* dev = FindPciDevice(pci, a);
    const std::string id = a.ToString();
    KeepInputs(id, enabled_pci, inputs);
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
