// File: cmd/daemon_command.h
//
// `pcidevices daemon --node-name N [--config FILE] [--sysfs-root DIR] [--dev-root DIR]
//   [--device-plugin-dir DIR] [--pod-resources-socket PATH] [--state-dir DIR] [--kubeconfig FILE]
//   [--uevent-source udev|kernel] [--vm-user-id N]`
// Standalone mode: advertises the devices the config enables (already on vfio-pci until vfio
// binding lands) as kubelet device plugins. SIGHUP re-reads the config; SIGTERM stops cleanly.
#pragma once

#include <string>
#include <vector>

namespace pcid::cmd {

int RunDaemon(const std::vector<std::string>& args);

}  // namespace pcid::cmd
