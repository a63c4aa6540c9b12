// The `pcidevices-agent` binary: the verbs that need the daemon's libraries (gRPC, protobuf,
// OpenSSL). `pcidevices` execs it; it has no test flags (TestHooks stay empty).
#include "cmd/agent.h"

int main(int argc, char** argv) { return pcid::cmd::RunAgent(argc, argv, {}); }
