#include "controller/node_cleanup.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include "core/status.h"
#include "projection/claims.h"
#include "projection/events.h"
#include "projection/kube_client.h"
#include "projection/kubevirt.h"

namespace pcid::controller {
namespace {

using projection::ObservedObject;
using projection::Store;

// The node a USB claim's device is on: its status, else its USBDevice's.
std::string UsbClaimNode(const ClusterStores& c, const ObservedObject& claim) {
  std::string node = StatusText(claim, "nodeName");
  if (node.empty()) {
    if (auto d = Find(c.usb_devices, claim.name)) node = StatusText(*d, "nodeName");
  }
  return node;
}

// Resource names listed in some live node's status.allocatable (served there).
std::set<std::string> ServedElsewhere(const ClusterStores& c, const std::string& gone) {
  return c.nodes.Read([&](const Store::Objects& nodes) {
    std::set<std::string> out;
    simdjson::dom::parser parser;
    for (const auto& [name, n] : nodes) {
      if (name == gone || n.deleting) continue;
      auto it = n.status.find("allocatable");
      simdjson::dom::object allocatable;
      if (it == n.status.end() || parser.parse(it->second).get(allocatable)) continue;
      for (auto [k, v] : allocatable) out.emplace(k);
    }
    return out;
  });
}

}  // namespace

std::set<std::string> GoneNodes(const ClusterStores& c) {
  std::set<std::string> out;
  if (!c.Unsynced().empty()) return out;
  std::set<std::string> named;
  for (const Store* s :
       {&c.pci_devices, &c.usb_devices, &c.sriov_networks, &c.sriov_gpus, &c.vgpus}) {
    s->Read([&](const Store::Objects& objects) {
      for (const auto& [name, o] : objects) {
        if (!o.node_label.empty()) named.insert(o.node_label);
      }
      return 0;
    });
  }
  for (const Store* s : {&c.pci_claims, &c.vf_claims}) {
    s->Read([&](const Store::Objects& objects) {
      for (const auto& [name, o] : objects) {
        if (!SpecText(o, "nodeName").empty()) named.insert(SpecText(o, "nodeName"));
      }
      return 0;
    });
  }
  c.usb_claims.Read([&](const Store::Objects& objects) {
    for (const auto& [name, o] : objects) {
      if (!StatusText(o, "nodeName").empty()) named.insert(StatusText(o, "nodeName"));
    }
    return 0;
  });
  for (const std::string& node : named) {
    if (NodeGone(c, node)) out.insert(node);
  }
  return out;
}

std::vector<CleanupStep> PlanNodeCleanup(const ClusterStores& c, const std::string& node) {
  using Action = CleanupStep::Action;
  std::vector<CleanupStep> steps;
  std::set<std::string> resources;  // of the node's claimed devices
  auto claims = [&](const Store& store, const char* kind, auto node_of, auto resource_of) {
    store.Read([&](const Store::Objects& objects) {
      for (const auto& [name, o] : objects) {
        if (node_of(o) != node) continue;
        if (projection::HasFinalizer(o)) {
          steps.push_back({Action::kRemoveFinalizer, store.plural(), kind, o, {}});
        }
        if (!o.deleting) steps.push_back({Action::kDelete, store.plural(), kind, o, {}});
        const std::string r = resource_of(o);
        if (!r.empty()) resources.insert(r);
      }
      return 0;
    });
  };
  auto device_resource = [&](const Store& devices) {
    return [&devices](const ObservedObject& claim) {
      auto d = Find(devices, claim.name);
      return d ? StatusText(*d, "resourceName") : std::string();
    };
  };
  claims(
      c.pci_claims, "PCIDeviceClaim",
      [](const ObservedObject& o) { return SpecText(o, "nodeName"); },
      device_resource(c.pci_devices));
  claims(
      c.vf_claims, "VFClaim", [](const ObservedObject& o) { return SpecText(o, "nodeName"); },
      [](const ObservedObject& o) { return StatusText(o, "resourceName"); });
  claims(
      c.usb_claims, "USBDeviceClaim", [&c](const ObservedObject& o) { return UsbClaimNode(c, o); },
      device_resource(c.usb_devices));
  for (const auto& device : {std::pair{&c.pci_devices, "PCIDevice"},
                             {&c.sriov_networks, "SRIOVNetworkDevice"},
                             {&c.usb_devices, "USBDevice"},
                             {&c.sriov_gpus, "SRIOVGPUDevice"},
                             {&c.vgpus, "VGPUDevice"}}) {
    const Store* store = device.first;
    const char* kind = device.second;
    store->Read([&](const Store::Objects& objects) {
      for (const auto& [name, o] : objects) {
        if (o.node_label == node && !o.deleting) {
          steps.push_back({Action::kDelete, store->plural(), kind, o, {}});
        }
      }
      return 0;
    });
  }
  // KubeVirt entries: those the node's claims needed, unless another claim anywhere or another
  // node's kubelet still needs them.
  if (!resources.empty()) {
    const std::set<std::string> served = ServedElsewhere(c, node);
    auto still_claimed = [&](const Store& claims_store, const Store& devices, auto node_of) {
      return claims_store.Read([&](const Store::Objects& objects) {
        std::set<std::string> out;
        for (const auto& [name, o] : objects) {
          if (node_of(o) == node) continue;
          if (auto d = Find(devices, name)) out.insert(StatusText(*d, "resourceName"));
          if (!StatusText(o, "resourceName").empty()) out.insert(StatusText(o, "resourceName"));
        }
        return out;
      });
    };
    std::set<std::string> needed =
        still_claimed(c.pci_claims, c.pci_devices,
                      [](const ObservedObject& o) { return SpecText(o, "nodeName"); });
    needed.merge(still_claimed(c.usb_claims, c.usb_devices,
                               [&c](const ObservedObject& o) { return UsbClaimNode(c, o); }));
    needed.merge(still_claimed(c.vf_claims, c.pci_devices,
                               [](const ObservedObject& o) { return SpecText(o, "nodeName"); }));
    std::set<std::string> orphaned;
    for (const std::string& r : resources) {
      if (!needed.count(r) && !served.count(r)) orphaned.insert(r);
    }
    const bool listed = c.kubevirts.Read([&](const Store::Objects& kvs) {
      for (const auto& [name, kv] : kvs) {
        for (const std::string& r : orphaned) {
          if (kv.permitted_resources.count(r)) return true;
        }
      }
      return false;
    });
    if (listed) steps.push_back({Action::kForgetPermitted, "", "KubeVirt", {}, orphaned});
  }
  return steps;
}

NodeCleanup::NodeCleanup(ClusterStores& cluster, projection::KubeCaller& client,
                         projection::EventRecorder& events, spdlog::logger& log)
    : cluster_(cluster), client_(client), events_(events), log_(log) {}

bool NodeCleanup::Run(const std::string& node, const CleanupStep& step) {
  using Action = CleanupStep::Action;
  if (step.action == Action::kForgetPermitted) {
    absl::Status s = projection::UpdatePermittedHostDevices(client_, {}, step.resources, 5, log_);
    if (!s.ok() && !absl::IsNotFound(s)) {
      log_.warn("node cleanup: {}: KubeVirt permittedHostDevices: {}", node, ToStd(s.message()));
      return false;
    }
    log_.info("node cleanup: {}: removed KubeVirt entries {}", node,
              absl::StrJoin(step.resources, ", "));
    return true;
  }
  const ObservedObject& o = step.object;
  const std::string path = absl::StrCat(kDevicesPrefix, step.plural, "/", o.name);
  absl::StatusOr<projection::KubeResponse> r =
      step.action == Action::kRemoveFinalizer
          ? client_.Call("PATCH", path, projection::FinalizersPatch(o, /*add=*/false),
                         "application/merge-patch+json")
          : client_.Call("DELETE", path,
                         absl::StrCat("{\"preconditions\":{\"uid\":\"", o.uid, "\"}}"));
  const char* what = step.action == Action::kRemoveFinalizer ? "finalizer removal" : "delete";
  if (!r.ok()) {
    log_.warn("node cleanup: {}: {} {}: {}: {}", node, step.kind, o.name, what,
              ToStd(r.status().message()));
    return false;
  }
  if (r->status == 404) return true;  // gone already
  if (r->status != 200 && r->status != 202) {
    log_.warn("node cleanup: {}: {} {}: {}: HTTP {}: {}", node, step.kind, o.name, what, r->status,
              projection::StatusMessage(r->body));
    return false;
  }
  // What the write made, so that the next pass plans from it rather than from a stale copy.
  if (Store* store = cluster_.ByPlural(step.plural)) {
    absl::StatusOr<ObservedObject> now = projection::DecodeObject(r->body);
    if (step.action == Action::kRemoveFinalizer && now.ok()) {
      store->Record(*std::move(now));
    } else if (step.action == Action::kDelete && (!now.ok() || now->finalizers.empty())) {
      store->Forget(projection::StoreKey(o));
    }
  }
  if (step.action == Action::kRemoveFinalizer) {
    events_.Record(client_, {"devices.harvesterhci.io/v1beta1", step.kind, o.name, "", o.uid},
                   "Warning", "NodeDeleted", "Cleanup",
                   absl::StrCat("node ", node,
                                " was deleted: the device could not be given back to its host "
                                "driver; the claim's finalizer was removed"));
  }
  log_.info("node cleanup: {}: {} {}: {}", node, step.kind, o.name,
            step.action == Action::kRemoveFinalizer ? "finalizer removed" : "deleted");
  return true;
}

int NodeCleanup::Pass() {
  int writes = 0;
  for (const std::string& node : GoneNodes(cluster_)) {
    std::vector<CleanupStep> steps = PlanNodeCleanup(cluster_, node);
    if (steps.empty()) continue;
    if (announced_.insert(node).second) {
      log_.info("node cleanup: node {} is gone: {} steps", node, steps.size());
    }
    for (const CleanupStep& step : steps) {
      if (!Run(node, step)) break;  // in order: a later step waits for this one
      ++writes;
    }
  }
  events_.Flush(client_);
  return writes;
}

}  // namespace pcid::controller
