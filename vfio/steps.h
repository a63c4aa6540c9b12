// File: vfio/steps.h
//
// Internal to vfio/: what binding.cc, sriov.cc and mdev.cc share (the test hook after each
// numbered step, device paths, writes whose errors name the device, who holds a device's IOMMU
// group).
#pragma once

#include <absl/status/status.h>
#include <absl/strings/str_cat.h>

#include <string>
#include <string_view>

#include "vfio/vfio.h"

namespace pcid::vfio::internal {

inline void Step(const Node& node, int n) {
  if (node.after_step) node.after_step(n);
}

inline std::string DevDir(const std::string& address) {
  return absl::StrCat("bus/pci/devices/", address);
}

inline absl::Status Write(const Node& node, const std::string& address, const std::string& rel,
                          std::string_view value) {
  absl::Status st = node.write(rel, value);
  if (!st.ok()) return absl::Status(st.code(), absl::StrCat("pci ", address, ": ", st.message()));
  return st;
}

// Who has the IOMMU group of the device whose sysfs directory is `dir` open (GroupUser), before
// a device is taken away: `user` is "" when no one does, when the device has no group link, or
// when there is no /proc to look in (Node::proc unset). When that cannot be told (a group link
// that names no number, an unreadable /proc) the error starts with `what` ("pci 0000:03:00.0").
struct GroupUse {
  std::string group;  // the group's number as its link names it
  std::string user;   // "pid 4242 (qemu-kvm)"
};
absl::StatusOr<GroupUse> GroupUseOf(const Node& node, const std::string& dir,
                                    const std::string& what);

}  // namespace pcid::vfio::internal
