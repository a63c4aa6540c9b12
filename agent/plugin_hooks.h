// File: agent/plugin_hooks.h
//
// What the device-plugin servers ask of the node on their gRPC threads: PreStartContainer's
// re-check (still on vfio-pci, group node present), the USB hand-over to the VM's user at
// Allocate, and the note that an Allocate was answered (posted to the owner thread). They read
// sysfs and /dev afresh and touch no reconciler state.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/sysfs_root.h"
#include "plugin/device_plugin_server.h"

namespace spdlog {
class logger;
}

namespace pcid::agent {

struct HookContext {
  const SysfsRoot& sysfs;
  const SysfsRoot& dev;
  unsigned vm_uid = 107;  // owner (uid and gid) of USB nodes handed to a VM
  spdlog::logger& log;
  // Called on the server's thread after a PCI Allocate was answered, with its IDs.
  std::function<void(std::vector<std::string> ids)> allocated;
  // Called on the server's thread with each Allocate's decision time (metrics).
  std::function<void(const plugin::Resource&, std::chrono::nanoseconds took, bool ok)>
      allocate_timed;
};

plugin::ServerHooks MakePluginHooks(const HookContext& ctx);

// chown of a host device node ("/dev/bus/usb/001/004"), found under ctx.dev, to the VM user;
// never through a symlink put in its place.
absl::Status HandOver(const HookContext& ctx, const std::string& host_path);

}  // namespace pcid::agent
