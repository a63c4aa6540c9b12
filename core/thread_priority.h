// File: core/thread_priority.h
//
// Raising one thread's CPU priority without raising the threads it starts. The daemon's owner
// thread handles every event in short steps; on a busy node the scheduler would otherwise share
// the CPU equally between it and its own gRPC threads, and a handler of 2 ms could take 20.
#pragma once

#include <absl/status/status.h>

namespace pcid {

// Gives the calling thread the nice value `nice` (lower is more CPU; -20..19) and asks the kernel
// to start every thread it creates from then on at nice 0 (SCHED_RESET_ON_FORK), so threads that
// gRPC or this thread start do not inherit the raise. A value below the thread's current one
// needs CAP_SYS_NICE: PermissionDenied otherwise, with nothing changed.
absl::Status PrioritizeThisThread(int nice);

// The calling thread's nice value.
int ThisThreadNice();

}  // namespace pcid
