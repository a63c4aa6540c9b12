// File: cmd/host_roots.h
//
// The node's trees the commands read and write (sysfs, /dev, /proc, from --sysfs-root,
// --dev-root and --proc-root) and the other host paths the commands share. The host's own paths
// are spelled here, once; everything else gets them from flags.
#pragma once

#include <absl/status/statusor.h>

#include "cmd/flags.h"
#include "core/sysfs_root.h"

namespace pcid::cmd {

inline constexpr char kDefaultSysfsRoot[] = "/sys";
inline constexpr char kDefaultDevRoot[] = "/dev";
inline constexpr char kDefaultProcRoot[] = "/proc";
inline constexpr char kDefaultStateDir[] = "/var/lib/pcidevices";
// Where deploy/daemonset.yaml mounts the daemon's config.
inline constexpr char kDefaultConfigPath[] = "/etc/pcidevices/config.json";
inline constexpr char kDefaultDevicePluginDir[] = "/var/lib/kubelet/device-plugins";
inline constexpr char kDefaultPodResourcesSocket[] = "/var/lib/kubelet/pod-resources/kubelet.sock";

struct HostRoots {
  SysfsRoot sysfs;
  SysfsRoot dev;
  SysfsRoot proc;
};

// Opens the three roots; the first that cannot be opened is the error (it names the path).
absl::StatusOr<HostRoots> OpenHostRoots(const ParsedFlags& flags);

}  // namespace pcid::cmd
