// File: cmd/doctor_mdev.h (internal to cmd/: the doctor's checks for a mediated device)
//
// `pcidevices doctor <UUID>`: is the mdev there (and its parent, type, IOMMU group node), did the
// agent create it (its intent), who holds it, is its type served (plugin socket) and, with
// --kubeconfig, permitted in KubeVirt and allocatable on --node. Reads only.
#pragma once

#include <string>

#include "cmd/doctor_checks.h"
#include "cmd/flags.h"
#include "cmd/host_roots.h"

namespace pcid::cmd {

// The mdev's resource name, from its type as sysfs shows it (or as the state file records it);
// "" when neither knows the UUID. `uuid` as ParseUuid returns it.
std::string MdevResource(const SysfsRoot& sysfs, const ParsedFlags& flags, const std::string& uuid);

void MdevNodeChecks(Doctor& d, const HostRoots& roots, const ParsedFlags& flags,
                    const std::string& uuid, const std::string& resource);

void MdevClusterChecks(Doctor& d, projection::KubeCaller& api, const std::string& node,
                       const std::string& resource);

}  // namespace pcid::cmd
