// File: cmd/daemon.h
//
// The daemon's owner thread: one loop (poll on signals, the plugin directory, the uevent monitor
// and its event queue) that owns the device inventory, selects what the config enables, plans
// health and resources, and drives the plugin manager. Everything else reaches it by posting
// to its queue. Used by `pcidevices daemon` and by the hotplug test harness.
#pragma once

#include <optional>
#include <string>

#include "cmd/host_roots.h"
#include "core/id_database.h"

namespace pcid::cmd {

struct DaemonFlags {
  std::string node, config, plugin_dir, pod_resources_socket, uevent_source;
  std::string state_dir = kDefaultStateDir;
  std::string modprobe = "modprobe";
  std::string kubeconfig = "";  // "" = in-cluster when there, else standalone
  unsigned vm_uid = 107;        // owner (uid and gid) of USB nodes handed to a VM
  std::string metrics_bind_address = ":9808";  // "0" = no metrics endpoint
  // DRA (the config's `dra`): the kubelet's root (plugins_registry/, plugins/) and where CDI
  // specs go.
  std::string kubelet_dir = "/var/lib/kubelet";
  std::string cdi_dir = "/var/run/cdi";
};

// Runs until SIGTERM or SIGINT (blocked in the calling thread and taken through a signalfd);
// SIGHUP re-reads the config. Returns the process exit code.
// At start, before anything else, the state directory's intents are re-applied (vfio binding);
// then the config's devices are enabled and served.
int RunDaemonLoop(DaemonFlags flags, HostRoots roots, std::optional<IdDatabase> ids);

}  // namespace pcid::cmd
