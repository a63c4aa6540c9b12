// File: cmd/test_hooks.h
//
// What a test build injects into the commands. The shipped binaries pass an empty TestHooks and
// have no test flags; only pcidevices_faults (e2e/faults_main.cc: built with the tests, never
// installed, not in the image) fills it in from its own command line.
#pragma once

#include <functional>

namespace pcid::cmd {

struct TestHooks {
  // Called after each numbered step of enable and disable when the command acts itself (no
  // daemon); the crash tests kill the process here (see vfio::Node::after_step).
  std::function<void(int step)> after_step;
};

}  // namespace pcid::cmd
