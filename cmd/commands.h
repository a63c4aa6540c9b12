// File: cmd/commands.h
//
// The `pcidevices` command line shared by the two binaries: `pcidevices` (the front: runs
// `list` itself and links nothing of gRPC, protobuf or OpenSSL) and `pcidevices-agent` (every
// other verb; the front execs it from its own directory). See docs/decisions.md.
#pragma once

#include <string_view>

namespace pcid::cmd {

inline constexpr char kUsage[] =
    "usage: pcidevices <command> [flags]\n"
    "\n"
    "commands:\n"
    "  list     list this node's PCI (or, with --usb, USB) devices, like lspci/lsusb\n"
    "  daemon   serve the enabled devices to the kubelet as device plugins\n"
    "  enable   bind PCI functions to vfio-pci (through the daemon when it runs)\n"
    "  disable  give PCI functions back to their original driver\n"
    "  vfs      set an SR-IOV PF's number of virtual functions\n"
    "  doctor   check why a device does not reach a VM (cluster and node), with fixes\n"
    "  controller  the cluster-wide part: admission webhooks, node cleanup (a Deployment)\n"
    "\n"
    "Run 'pcidevices <command> --help' for a command's flags.\n";

// Installed (or symlinked) under this name, `pcidevices` is kubectl's plugin `kubectl pcidevices`
// (cmd/kubectl_plugin.h): the front execs the agent's `kubectl` verb.
inline constexpr char kKubectlPluginName[] = "kubectl-pcidevices";

// The agent binary's file name; the front looks for it next to itself (/proc/self/exe).
inline constexpr char kAgentBinaryName[] = "pcidevices-agent";

// The verbs pcidevices-agent runs.
inline bool IsAgentCommand(std::string_view command) {
  return command == "daemon" || command == "enable" || command == "disable" || command == "vfs" ||
         command == "doctor" || command == "kubectl" || command == "controller";
}

inline bool IsHelp(std::string_view arg) { return arg == "--help" || arg == "-h" || arg == "help"; }

}  // namespace pcid::cmd
