#include "controller/cluster.h"

#include "projection/kubevirt.h"

namespace pcid::controller {

using projection::ObservedObject;
using projection::Store;

std::vector<std::pair<Store*, projection::Resource>> ClusterStores::Watched() {
  std::vector<std::pair<Store*, projection::Resource>> out = {
      {&nodes, {"/api/v1/", "nodes", ""}},
      // Without KubeVirt there are no VMs to protect: the claims' rules must not wait for it.
      {&vms, {"/apis/kubevirt.io/v1/", "virtualmachines", "", true}},
      {&kubevirts, {projection::kKubeVirtPrefix, projection::kKubeVirtPlural, "", true}},
  };
  for (Store* s : {&pci_devices, &pci_claims, &usb_devices, &usb_claims, &vgpus, &sriov_networks,
                   &sriov_gpus, &vf_claims}) {
    out.push_back({s, {kDevicesPrefix, s->plural(), ""}});
  }
  return out;
}

Store* ClusterStores::ByPlural(const std::string& plural) {
  for (auto& [store, resource] : Watched()) {
    if (resource.plural == plural) return store;
  }
  return nullptr;
}

std::vector<std::string> ClusterStores::Unsynced() const {
  std::vector<std::string> out;
  for (const Store* s : {&nodes, &pci_devices, &pci_claims, &usb_devices, &usb_claims, &vgpus,
                         &sriov_networks, &sriov_gpus, &vf_claims, &vms, &kubevirts}) {
    if (!s->synced()) out.push_back(s->plural());
  }
  return out;
}

std::optional<ObservedObject> Find(const Store& store, const std::string& key) {
  return store.Read([&](const Store::Objects& objects) -> std::optional<ObservedObject> {
    auto it = objects.find(key);
    if (it == objects.end()) return std::nullopt;
    return it->second;
  });
}

bool NodeGone(const ClusterStores& c, const std::string& node) {
  if (!c.nodes.synced()) return false;
  std::optional<ObservedObject> n = Find(c.nodes, node);
  return !n || n->deleting;
}

std::optional<std::string> VmUsing(const ClusterStores& c, const std::string& device) {
  return c.vms.Read([&](const Store::Objects& vms) -> std::optional<std::string> {
    for (const auto& [key, vm] : vms) {
      for (const auto* list : {&vm.host_devices, &vm.gpus}) {
        for (const projection::HostDeviceRef& d : *list) {
          if (d.name == device) return key;
        }
      }
    }
    return std::nullopt;
  });
}

}  // namespace pcid::controller
