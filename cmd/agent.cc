#include "cmd/agent.h"

#include <iostream>
#include <string>
#include <vector>

#include "cmd/commands.h"
#include "cmd/daemon_command.h"
#include "cmd/controller_command.h"
#include "cmd/doctor_command.h"
#include "cmd/kubectl_plugin.h"
#include "cmd/list_command.h"
#include "cmd/vfio_command.h"

namespace pcid::cmd {

int RunAgent(int argc, char** argv, const TestHooks& hooks) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "list") return RunList(args);
  if (command == "daemon") return RunDaemon(args);
  if (command == "doctor") return RunDoctor(args);
  if (command == "controller") return RunController(args);
  if (command == "kubectl") return RunKubectlPlugin(args);
  if (command == "enable" || command == "disable" || command == "vfs")
    return RunDeviceCommand(command, args, hooks);
  if (IsHelp(command)) {
    std::cout << kUsage;
    return 0;
  }
  std::cerr << "pcidevices: unknown command \"" << command << "\"\n" << kUsage;
  return 2;
}

}  // namespace pcid::cmd
