// File: cmd/vfio_command.h
//
// `pcidevices enable|disable ADDRESS... [--force]`: binds functions to vfio-pci or gives them
// back, for one node. When a daemon runs (its control socket in --state-dir answers), the
// request goes to it, so that one process owns the devices; otherwise the command acts itself,
// holding the state directory's lock. Also the modprobe runner the daemon shares.
#pragma once

#include <absl/status/status.h>

#include <string>
#include <vector>

#include "cmd/test_hooks.h"

namespace pcid::cmd {

// `hooks` is empty in the shipped binaries (see cmd/test_hooks.h).
int RunDeviceCommand(const std::string& verb, const std::vector<std::string>& args,
                     const TestHooks& hooks);

// Runs `<modprobe> vfio-pci` and waits for it.
absl::Status LoadVfioModule(const std::string& modprobe);

}  // namespace pcid::cmd
