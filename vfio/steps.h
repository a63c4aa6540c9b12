// File: vfio/steps.h
//
// Internal to vfio/: what binding.cc and sriov.cc share (the test hook after each numbered step,
// device paths, writes whose errors name the device).
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

}  // namespace pcid::vfio::internal
