// File: cmd/kubectl_plugin.h
//
// `kubectl pcidevices list|doctor`: the `pcidevices` binary installed (or symlinked) as
// `kubectl-pcidevices` on the PATH, which kubectl runs as a plugin. Against the cluster only:
//   list   [--node N] [--output table|json]   every PCIDevice (of node N), with its claim's state
//   doctor NAME [--output text|json]           `pcidevices doctor`'s cluster checks
// The kubeconfig: --kubeconfig, else the first file of $KUBECONFIG, else ~/.kube/config.
#pragma once

#include <string>
#include <vector>

namespace pcid::cmd {

int RunKubectlPlugin(const std::vector<std::string>& args);

}  // namespace pcid::cmd
