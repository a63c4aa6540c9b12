// File: agent/config.h
//
// The standalone config file: `{"enable": [selector, ...], "deny": [selector, ...]}` (`deny`:
// devices never bound to vfio-pci, whatever enables them), a selector being an object with any
// of "address", "vendor" (4 hex), "device" (4 hex), "class" (4 hex), "driver". Unknown keys, wrong
// types, malformed values and broken JSON are errors naming the file and the offending part.
#pragma once

#include <absl/status/statusor.h>

#include <string>
#include <vector>

#include "core/selector.h"

namespace pcid::agent {

struct DaemonConfig {
  std::vector<DeviceSelector> enable;
  std::vector<DeviceSelector> deny = {};
};

absl::StatusOr<DaemonConfig> ParseConfig(const std::string& json, const std::string& origin);
absl::StatusOr<DaemonConfig> LoadConfig(const std::string& path);

}  // namespace pcid::agent
