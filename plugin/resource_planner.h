// File: plugin/resource_planner.h
//
// PlanResources (plugin/resources.h) kept up to date by small steps: after a change, only the
// functions it can reach are planned again (those that changed and every function of their IOMMU
// groups, since a group-mate's driver and holder are part of health), so a hot-plug on a node of
// thousands of functions costs a few of them, not the node. The result is the same plan
// PlanResources gives for the same inputs (the unit tests hold it to that). Owner thread only.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/device.h"
#include "plugin/resources.h"

namespace pcid::plugin {

class ResourcePlanner {
 public:
  // The caller marks what it changed since the last Plan, as it knows it: a PciDevice read again
  // (changed, appeared or went), a function enabled or given back, or whose vfio cdev came or
  // went, at `address`; a group whose /dev/vfio node came or went. Holders and removed
  // functions (small) are compared here at every Plan.
  void MarkChanged(const PciAddress& address) { marked_.insert(address); }
  void MarkGroupChanged(unsigned group) { marked_groups_.insert(group); }
  // The enabled set, the group nodes and the cdevs may have changed in ways not marked (a probe
  // of the whole node): the next Plan compares them with the last plan's.
  void MarkInputsChanged() { compare_all_ = true; }
  // The next Plan plans every function (the first one does).
  void MarkAll() { all_ = true; }

  // Brings the plan up to date with these inputs (as PlanResources takes them; `pci` sorted by
  // address), taking at most `max_functions` of the changed PCI functions, each with the rest of
  // its IOMMU group: the others stay marked for the next call (pending()), so that thousands of
  // functions changing at once (a node's start) are planned over several turns of the owner
  // loop, each costing its own share. USB resources are planned whole each time: a
  // node has a handful of USB devices. Returns the names of the resources added, changed or gone.
  std::set<std::string> Plan(const std::vector<PciDevice>& pci, const std::vector<UsbDevice>& usb,
                             const std::set<std::string>& enabled_pci,
                             const std::set<std::string>& enabled_usb, const std::string& node_name,
                             const HealthInputs& inputs, size_t max_functions = SIZE_MAX);
  // Replaces the mdev resources with `now` (PlanMdevResources); returns the names added, changed
  // or gone. A name a PCI or USB resource has is left to it.
  std::set<std::string> PlanMdevs(std::map<std::string, Resource> now);
  // Functions are left to plan: call Plan again (with the same or newer inputs).
  bool pending() const { return all_ || !marked_.empty() || !marked_groups_.empty(); }

  const std::map<std::string, Resource>& resources() const { return plan_; }

 private:
  // Adds the functions whose inputs differ from the last plan's, and the IOMMU groups whose
  // /dev/vfio node came or went; remembers the inputs that differ for the next plan. The
  // node-sized inputs only after MarkInputsChanged (or MarkAll).
  void FindChanges(const std::set<std::string>& enabled_pci, const HealthInputs& inputs,
                   std::set<PciAddress>& dirty, std::set<unsigned>& dirty_groups);
  // The kept enabled flag and cdev of the function `id` as the plan now has them.
  void KeepInputs(const std::string& id, const std::set<std::string>& enabled_pci,
                  const HealthInputs& inputs);
  void PlanUsb(const std::vector<UsbDevice>& usb, const std::set<std::string>& enabled_usb,
               const std::string& node_name, std::set<std::string>& changed);
  // Puts `now` in place of the plan's resources of one kind (`is_kind`), adding to `changed`.
  template <typename IsKind>
  void ReplaceKind(std::map<std::string, Resource> now, IsKind is_kind,
                   std::set<std::string>& changed);

  bool all_ = true;
  bool compare_all_ = true;
  std::set<PciAddress> marked_;
  std::set<unsigned> marked_groups_;
  // The inputs of the last plan, to find what differs next time.
  std::set<std::string> enabled_pci_;
  HealthInputs inputs_;
  std::map<PciAddress, unsigned> group_of_;        // every function with an IOMMU group
  std::map<PciAddress, std::string> resource_of_;  // every planned function's resource
  std::map<std::string, Resource> plan_;
};

}  // namespace pcid::plugin
