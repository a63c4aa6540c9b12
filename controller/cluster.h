// File: controller/cluster.h
//
// What the cluster controller knows of the cluster: one informer store per resource it reads
// (projection/informer.h keeps them current), and the lookups its webhooks and node cleanup
// share. The stores are thread-safe; so are these functions (each takes one store's lock at a
// time, and copies what it returns).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "projection/informer.h"
#include "projection/store.h"

namespace pcid::controller {

inline constexpr char kDevicesPrefix[] = "/apis/devices.harvesterhci.io/v1beta1/";

struct ClusterStores {
  // Every store, the one list Watched, ByPlural and Unsynced walk.
  projection::Store nodes{"nodes"};
  projection::Store pci_devices{"pcidevices"};
  projection::Store pci_claims{"pcideviceclaims"};
  projection::Store usb_devices{"usbdevices"};
  projection::Store usb_claims{"usbdeviceclaims"};
  projection::Store vgpus{"vgpudevices"};
  projection::Store sriov_networks{"sriovnetworkdevices"};
  projection::Store sriov_gpus{"sriovgpudevices"};
  projection::Store vf_claims{"vfclaims"};
  projection::Store vms{"virtualmachines"};
  projection::Store kubevirts{"kubevirts"};
  static const std::vector<projection::Store ClusterStores::*> kAll;

  // Each store with where its informer lists it (every object, every namespace).
  std::vector<std::pair<projection::Store*, projection::Resource>> Watched();
  // The store of `plural`; nullptr for one not watched.
  projection::Store* ByPlural(const std::string& plural);
  // The plurals of the stores not listed yet.
  std::vector<std::string> Unsynced() const;
};

// One object, copied; nullopt when the store has none under `key`.
std::optional<projection::ObservedObject> Find(const projection::Store& store,
                                               const std::string& key);

// True when the Node is known to be gone or going: listed, and absent or being deleted. Deletes
// that depend on the node's agent are allowed then (nobody will ever act on them).
bool NodeGone(const ClusterStores& c, const std::string& node);

struct VmRef {
  std::string ns, name;
};
// The first VirtualMachine whose hostDevices or gpus name `device` (an object's name, as
// Harvester's VMs do); nullopt when none.
std::optional<VmRef> VmUsing(const ClusterStores& c, const std::string& device);

// A string field of the object's .spec, "" when absent.
std::string SpecText(const projection::ObservedObject& o, const std::string& key);
// A string field of its .status, "" when absent or not a string.
std::string StatusText(const projection::ObservedObject& o, std::string_view key);

}  // namespace pcid::controller
