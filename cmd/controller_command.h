// File: cmd/controller_command.h
//
// `pcidevices controller`: the cluster-wide part, run as a Deployment (deploy/controller.yaml).
// Every replica serves the admission webhooks; the leader (a coordination.k8s.io Lease) also
// cleans up after deleted nodes. SIGTERM releases the lease and stops within a few seconds.
#pragma once

#include <string>
#include <vector>

namespace pcid::cmd {

int RunController(const std::vector<std::string>& args);

}  // namespace pcid::cmd
