// File: controller/validate.h
//
// The validating webhook (`/validate`): Harvester's rules (pkg/webhook: pcideviceclaim.go,
// usbdeviceclaim.go, usbdevice.go, vgpu.go, sriov.go, sriovgpudevices.go, vm_validatation.go,
// with their messages) and the ones this project's claims need, dispatched on the request's
// resource. docs/decisions.md lists every rule and where it differs from upstream. Pure over
// the stores; any thread.
#pragma once

#include <string>

#include "controller/admission.h"
#include "controller/cluster.h"

namespace pcid::controller {

struct ValidationPolicy {
  // Requests from users with this prefix (the project's own service accounts,
  // "system:serviceaccount:<namespace>:") are the node agents mirroring what the kernel says: a
  // USB device unplugged while enabled is deleted by its agent, whatever the rules for users.
  std::string system_prefix;
};

AdmissionVerdict Validate(const AdmissionRequest& request, const ClusterStores& cluster,
                          const ValidationPolicy& policy);

}  // namespace pcid::controller
