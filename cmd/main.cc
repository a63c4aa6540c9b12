// The `pcidevices` binary: dispatches to one subcommand.
#include <iostream>
#include <string>
#include <vector>

#include "cmd/daemon_command.h"
#include "cmd/list_command.h"
#include "cmd/vfio_command.h"

namespace {

constexpr char kUsage[] =
    "usage: pcidevices <command> [flags]\n"
    "\n"
    "commands:\n"
    "  list     list this node's PCI (or, with --usb, USB) devices, like lspci/lsusb\n"
    "  daemon   serve the enabled devices to the kubelet as device plugins\n"
    "  enable   bind PCI functions to vfio-pci (through the daemon when it runs)\n"
    "  disable  give PCI functions back to their original driver\n"
    "  vfs      set an SR-IOV PF's number of virtual functions\n"
    "\n"
    "Run 'pcidevices <command> --help' for a command's flags.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "list") return pcid::cmd::RunList(args);
  if (command == "daemon") return pcid::cmd::RunDaemon(args);
  if (command == "enable" || command == "disable" || command == "vfs")
    return pcid::cmd::RunDeviceCommand(command, args);
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << kUsage;
    return 0;
  }
  std::cerr << "pcidevices: unknown command \"" << command << "\"\n" << kUsage;
  return 2;
}
