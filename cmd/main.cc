// The `pcidevices` binary, the light front: `list` runs here, with only core/, udev/ and the
// listing linked (it starts like lspci); every other verb execs pcidevices-agent from this
// binary's own directory with the same arguments (same process id, environment and exit code).
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "cmd/commands.h"
#include "cmd/list_command.h"

namespace {

// The agent's path: this executable's directory (/proc/self/exe, symlinks resolved) + the
// agent's name. Empty when /proc/self/exe cannot be read.
std::string AgentPath() {
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return {};
  std::string path(self, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {};
  return path.substr(0, slash + 1) + pcid::cmd::kAgentBinaryName;
}

// Returns only when the exec failed: 127 when the agent is missing, 126 otherwise (as a shell).
int ExecAgent(char** argv) {
  const std::string agent = AgentPath();
  if (agent.empty()) {
    std::cerr << "pcidevices: cannot find " << pcid::cmd::kAgentBinaryName
              << ": /proc/self/exe: " << ::strerror(errno) << "\n";
    return 127;
  }
  ::execv(agent.c_str(), argv);
  const int err = errno;
  std::cerr << "pcidevices " << argv[1] << ": cannot run " << agent << ": " << ::strerror(err)
            << " (it is installed next to pcidevices)\n";
  return err == ENOENT ? 127 : 126;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string self = argv[0];
  if (self.substr(self.rfind('/') + 1) == pcid::cmd::kKubectlPluginName) {
    // kubectl runs its plugins with the words after `kubectl pcidevices`.
    std::vector<char*> agent_argv = {argv[0], const_cast<char*>("kubectl")};
    agent_argv.insert(agent_argv.end(), argv + 1, argv + argc);
    agent_argv.push_back(nullptr);
    return ExecAgent(agent_argv.data());
  }
  if (argc < 2) {
    std::cerr << pcid::cmd::kUsage;
    return 2;
  }
  const std::string command = argv[1];
  if (command == "list") return pcid::cmd::RunList(std::vector<std::string>(argv + 2, argv + argc));
  if (pcid::cmd::IsAgentCommand(command)) return ExecAgent(argv);
  if (pcid::cmd::IsHelp(command)) {
    std::cout << pcid::cmd::kUsage;
    return 0;
  }
  std::cerr << "pcidevices: unknown command \"" << command << "\"\n" << pcid::cmd::kUsage;
  return 2;
}
