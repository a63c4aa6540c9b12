#include "controller/cluster.h"

#include "projection/kubevirt.h"

namespace pcid::controller {

using projection::ObservedObject;
using projection::Store;

const std::vector<Store ClusterStores::*> ClusterStores::kAll = {
    &ClusterStores::nodes,          &ClusterStores::pci_devices,
    &ClusterStores::pci_claims,     &ClusterStores::usb_devices,
    &ClusterStores::usb_claims,     &ClusterStores::vgpus,
    &ClusterStores::sriov_networks, &ClusterStores::sriov_gpus,
    &ClusterStores::vf_claims,      &ClusterStores::vms,
    &ClusterStores::kubevirts};

std::vector<std::pair<Store*, projection::Resource>> ClusterStores::Watched() {
  std::vector<std::pair<Store*, projection::Resource>> out;
  for (Store ClusterStores::*member : kAll) {
    Store* s = &(this->*member);
    if (s == &nodes) {
      out.push_back({s, {"/api/v1/", "nodes", ""}});
    } else if (s == &vms || s == &kubevirts) {
      // Without KubeVirt there are no VMs to protect: the claims' rules must not wait for it.
      out.push_back({s, {projection::kKubeVirtPrefix, s->plural(), "", /*optional=*/true}});
    } else {
      out.push_back({s, {kDevicesPrefix, s->plural(), ""}});
    }
  }
  return out;
}

Store* ClusterStores::ByPlural(const std::string& plural) {
  for (Store ClusterStores::*member : kAll) {
    if ((this->*member).plural() == plural) return &(this->*member);
  }
  return nullptr;
}

std::vector<std::string> ClusterStores::Unsynced() const {
  std::vector<std::string> out;
  for (Store ClusterStores::*member : kAll) {
    if (!(this->*member).synced()) out.push_back((this->*member).plural());
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

std::optional<VmRef> VmUsing(const ClusterStores& c, const std::string& device) {
  return c.vms.Read([&](const Store::Objects& vms) -> std::optional<VmRef> {
    for (const auto& [key, vm] : vms) {
      for (const auto* list : {&vm.host_devices, &vm.gpus}) {
        for (const projection::HostDeviceRef& d : *list) {
          if (d.name == device) return VmRef{vm.ns, vm.name};
        }
      }
    }
    return std::nullopt;
  });
}

std::string SpecText(const ObservedObject& o, const std::string& key) {
  auto it = o.spec.find(key);
  return it == o.spec.end() ? "" : it->second;
}

std::string StatusText(const ObservedObject& o, std::string_view key) {
  return projection::StatusString(o, key).value_or("");
}

}  // namespace pcid::controller
