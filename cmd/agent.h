// File: cmd/agent.h
//
// The entry point of pcidevices-agent (cmd/agent_main.cc) and of the test build
// pcidevices_faults (e2e/faults_main.cc): dispatches `daemon`, `enable`, `disable`, `vfs` (and
// `list`, so that either binary runs every verb) with the given test hooks.
#pragma once

#include "cmd/test_hooks.h"

namespace pcid::cmd {

// argv[1] is the verb, as in `pcidevices`. Returns the process exit code.
int RunAgent(int argc, char** argv, const TestHooks& hooks);

}  // namespace pcid::cmd
