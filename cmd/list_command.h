// File: cmd/list_command.h
//
// `pcidevices list [--sysfs-root DIR] [--node-name N] [--usb | --mdev] [--output table|json]
//                  [--pci-ids FILE] [--usb-ids FILE]`: the cloud-native lspci. Read-only.
// `--mdev` shows mediated-device parents with their types, existing mdevs, and VFs with
// vendor-specific vGPU types (table, or one JSON object with those three arrays).
#pragma once

#include <string>
#include <vector>

namespace pcid::cmd {

// Runs the command; output to stdout, diagnostics to stderr. Returns the process exit code.
int RunList(const std::vector<std::string>& args);

}  // namespace pcid::cmd
