// File: agent/config.h
//
// The standalone config file: `{"enable": [selector, ...], "deny": [selector, ...], "sriov":
// [{"address": "0000:04:00.0", "numVFs": 2, "driversAutoprobe": false}, ...]}` (`deny`: devices
// never bound to vfio-pci, whatever enables them; `sriov`: the VF count of each PF, and whether
// its VFs go to the VF driver first; `mdevs`: mediated devices kept, see MdevConfig; `dra`: the
// devices served through DRA instead of device plugins, read at start), a selector
// being an object with any of "address", "vendor" (4 hex), "device" (4 hex), "class" (4 hex),
// "driver". Unknown keys, wrong types, malformed values and broken JSON are errors naming the file
// and the offending part.
#pragma once

#include <absl/status/statusor.h>

#include <optional>
#include <string>
#include <vector>

#include "core/selector.h"

namespace pcid::agent {

struct SriovConfig {
  PciAddress address;
  unsigned num_vfs = 0;
  std::optional<bool> drivers_autoprobe;  // unset: the PF's own setting is left alone
  friend bool operator==(const SriovConfig&, const SriovConfig&) = default;
};

// `"mdevs": [{"parent": "0000:08:01.7" | "mtty", "type": "mtty-2", "count": 2}]`: the agent keeps
// `count` mdevs of that type on that parent (DESIGN.md "Second wave").
struct MdevConfig {
  std::string parent;  // the name under class/mdev_bus; a PCI address in its canonical form
  std::string type;    // the type directory's name
  unsigned count = 0;
  friend bool operator==(const MdevConfig&, const MdevConfig&) = default;
};

struct DaemonConfig {
  std::vector<DeviceSelector> enable;
  std::vector<DeviceSelector> deny = {};
  std::vector<SriovConfig> sriov = {};
  std::vector<MdevConfig> mdevs = {};
  // Devices (PCI and USB) served through DRA (dra/) instead of device plugins: never enabled by
  // `enable` or claims, offered in ResourceSlices, bound when a ResourceClaim is prepared.
  std::vector<DeviceSelector> dra = {};
};

absl::StatusOr<DaemonConfig> ParseConfig(const std::string& json, const std::string& origin);
absl::StatusOr<DaemonConfig> LoadConfig(const std::string& path);

}  // namespace pcid::agent
