// File: agent/device_actions.h
//
// `enable` and `disable` of PCI functions by address, as the operator asks for them: the same
// code whether `pcidevices enable|disable` acts directly (no daemon running) or the daemon acts
// on the request it got over its control socket. Addresses are validated strictly before any
// path is built; a refusal changes nothing. Owner thread (or the command's only thread).
#pragma once

#include <absl/status/statusor.h>

#include <functional>
#include <string>
#include <vector>

#include "core/device.h"
#include "vfio/vfio.h"

namespace pcid::agent {

struct DeviceRequest {
  std::string verb;                    // "enable", "disable" or "vfs"
  std::vector<std::string> addresses;  // as typed; validated by RunDeviceRequest
  bool force = false;                  // disable even while a pod holds the device
  unsigned vf_count = 0;               // vfs: the PF's new number of VFs
};

// One request line of the control socket: "enable|disable [--force] ADDRESS..." or
// "vfs ADDRESS COUNT".
absl::StatusOr<DeviceRequest> ParseDeviceRequest(std::string_view line);
std::string FormatDeviceRequest(const DeviceRequest& r);
// A VF count as typed: 0 to 65535.
absl::StatusOr<unsigned> ParseVfCount(std::string_view text);

struct DeviceContext {
  const vfio::Node& node;
  vfio::StateStore& store;
  const std::vector<PciDevice>& devices;  // sorted by address
  std::function<absl::StatusOr<vfio::Protected>()> protect;
  // Who holds a device right now ("ns/pod/container"), "" when nobody: PodResources.
  std::function<absl::StatusOr<std::string>(const std::string& address)> holder;
};

// Applies the request to each address in turn, so one bad address does not stop the others; one
// reply line per address: "ok enabled 0000:03:00.0 (vfio-pci, group 10: viable)" or "error <why>".
// Enabling is by source "cli"; disabling a device the config also enables is refused (the config
// would enable it again).
// vfs sets an SR-IOV PF's VF count (vfio::SetNumVfs), refused for a protected PF (its VF may
// carry the host's network) and while a pod holds one of its VFs.
std::vector<std::string> RunDeviceRequest(const DeviceContext& ctx, const DeviceRequest& req);

// Device ID -> holder from the kubelet's PodResources socket, synchronously (at most 2 s). No
// socket at all means no kubelet on this node: nothing is held.
absl::StatusOr<std::map<std::string, std::string>> ListHoldersNow(const std::string& socket);

}  // namespace pcid::agent
