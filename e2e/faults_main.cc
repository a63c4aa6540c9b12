// `pcidevices_faults`: pcidevices-agent with fault injection, for the crash tests only (built
// with the tests, never installed, not in the image; the shipped binaries have no test flags).
//
//   pcidevices_faults enable|disable|vfs ... --test-abort-after-step N [the agent's flags]
//
// --test-abort-after-step N (anywhere after the verb, also as --test-abort-after-step=N; 1..99):
// the process kills itself with SIGKILL right after step N of enable, disable or vfs, as a kill -9
// would, when it acts itself (no daemon answering). Everything else is the agent's.
#include <signal.h>

#include <iostream>
#include <string>
#include <vector>

#include "cmd/agent.h"
#include "core/attribute.h"

namespace {

constexpr char kFlag[] = "--test-abort-after-step";

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  std::string value;
  bool given = false;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i >= 2 && arg == kFlag) {
      if (i + 1 >= argc) {
        std::cerr << "pcidevices_faults: flag " << kFlag << " needs a value\n";
        return 2;
      }
      value = argv[++i];
      given = true;
    } else if (i >= 2 && arg.rfind(std::string(kFlag) + "=", 0) == 0) {
      value = arg.substr(sizeof kFlag);
      given = true;
    } else {
      rest.push_back(argv[i]);
    }
  }
  pcid::cmd::TestHooks hooks;
  if (given) {
    auto n = pcid::ParseDecimalAttribute(value, 1, 99);
    if (!n.ok()) {
      std::cerr << "pcidevices_faults: " << kFlag << ": " << n.status().message() << "\n";
      return 2;
    }
    hooks.after_step = [n = *n](int step) {
      if (step == n) ::raise(SIGKILL);
    };
  }
  rest.push_back(nullptr);
  return pcid::cmd::RunAgent(static_cast<int>(rest.size()) - 1, rest.data(), hooks);
}
