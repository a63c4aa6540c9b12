// File: cmd/daemon_command.h
//
// `pcidevices daemon --node-name N [--config FILE] [--sysfs-root DIR] [--dev-root DIR]
//   [--device-plugin-dir DIR] [--pod-resources-socket PATH] [--state-dir DIR] [--kubeconfig FILE]
//   [--uevent-source udev|kernel] [--vm-user-id N] [--proc-root DIR] [--modprobe CMD]`
// Standalone mode: re-applies the state directory's intents, binds the devices the config
// enables to vfio-pci and advertises them as kubelet device plugins; serves `pcidevices
// enable|disable` on <state-dir>/control.sock. SIGHUP re-reads the config; SIGTERM stops cleanly.
#pragma once

#include <string>
#include <vector>

namespace pcid::cmd {

int RunDaemon(const std::vector<std::string>& args);

}  // namespace pcid::cmd
