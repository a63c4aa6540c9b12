// File: controller/vm_mutation.h
//
// The mutating webhook (`/mutate`) for kubevirt.io/v1 VirtualMachines, as Harvester's
// (pkg/webhook/vm.go): every PCI host device the VM names brings its IOMMU group-mates along (a
// GPU its audio function), added to `hostDevices` and claimed for the same user, since vfio-pci
// can hand a group to a VM only whole. Planning is pure over the stores; the claims are created
// by the caller (the webhook server), and not on a dry run.
#pragma once

#include <string>
#include <vector>

#include "controller/admission.h"
#include "controller/cluster.h"

namespace pcid::controller {

// A PCIDeviceClaim to create for a group-mate: named as its PCIDevice, owned by it.
struct GroupMateClaim {
  std::string name;
  std::string address;
  std::string node;
  std::string user;       // the requesting device's claim's spec.userName
  std::string owner_uid;  // the PCIDevice's metadata.uid
};

struct VmMutation {
  AdmissionVerdict verdict;  // allowed, with the JSON Patch (and a warning naming the mates)
  std::vector<GroupMateClaim> claims;
};

// On CREATE, and on UPDATE when hostDevices changed (upstream compares the new object with
// itself and never adds mates on UPDATE). A host device whose PCIDevice or PCIDeviceClaim does
// not exist is left as it is (the VM may name devices of another kind). Mates already named, PCI
// bridges (they stay with their port driver inside a vfio group) and functions without a
// resource are not added; a mate shared by two requested devices is added once.
VmMutation PlanVmMutation(const AdmissionRequest& request, const ClusterStores& cluster);

// The PCIDeviceClaim object for `claim`.
std::string GroupMateClaimJson(const GroupMateClaim& claim);

}  // namespace pcid::controller
