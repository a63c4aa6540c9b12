// File: controller/node_cleanup.h
//
// What a deleted Node leaves behind, and its removal (leader only). When a Node is gone from the
// cluster (deleted, being deleted, or missing when the controller starts), no agent will ever
// act for it again: its claims' finalizers are removed (with a Warning Event on each claim: the
// device could not be given back), the claims deleted, then its PCIDevices, SR-IOV objects,
// USBDevices and VGPUDevices deleted; KubeVirt's permittedHostDevices entries that only its
// devices needed are removed. Order as Harvester's nodecleanup controller: claims first, so the
// webhooks' in-use rules see them gone. Each pass plans from the stores afresh, so a write that
// failed is simply planned again.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "controller/cluster.h"

namespace spdlog {
class logger;
}
namespace pcid::projection {
class EventRecorder;
class KubeCaller;
}  // namespace pcid::projection

namespace pcid::controller {

// Nodes our objects name that the (synced) Node store does not hold or holds as being deleted.
// Empty while any store is not synced: an empty cache must not look like a deleted cluster.
std::set<std::string> GoneNodes(const ClusterStores& c);

struct CleanupStep {
  enum class Action { kRemoveFinalizer, kDelete, kForgetPermitted };
  Action action;
  std::string plural;  // "pcideviceclaims"; "" for kForgetPermitted
  std::string kind;    // "PCIDeviceClaim"
  projection::ObservedObject object;
  std::set<std::string> resources;  // kForgetPermitted: the resource names to remove
};

// The steps for `node`, in order: claims (finalizer, then delete), devices, then KubeVirt.
std::vector<CleanupStep> PlanNodeCleanup(const ClusterStores& c, const std::string& node);

class NodeCleanup {
 public:
  // All references outlive the cleanup; `client` is used on the caller's thread only.
  NodeCleanup(ClusterStores& cluster, projection::KubeCaller& client,
              projection::EventRecorder& events, spdlog::logger& log);

  // Plans and runs every gone node's steps; returns how many writes succeeded. A failure is
  // logged and planned again next pass.
  int Pass();

 private:
  bool Run(const std::string& node, const CleanupStep& step);

  ClusterStores& cluster_;
  projection::KubeCaller& client_;
  projection::EventRecorder& events_;
  spdlog::logger& log_;
  std::set<std::string> announced_;  // nodes whose cleanup start was logged
};

}  // namespace pcid::controller
