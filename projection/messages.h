// File: projection/messages.h
//
// What the projection's threads tell its controller loop, as typed messages (one small struct
// per kind, all in one std::variant): informers say a store was listed or changed, the device
// owner answers a claim, an SR-IOV or a vGPU request, Publish() hands over a new inventory, the
// claims and VFClaim controllers tell the KubeVirt controller which entries their claims need. The
// loop (projection.cc) hands each message to the controllers that care. Also the write counters the
// controllers share. Values; Counters is thread-safe.
#pragma once

#include <absl/base/thread_annotations.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <variant>

#include "core/mutex.h"
#include "projection/claims.h"
#include "projection/kubevirt.h"
#include "projection/projection.h"

namespace pcid::projection {

// An informer listed its resource (the first time, or again after 410 / a broken stream).
struct StoreListed {
  std::string plural;
};
// An informer applied a watch event that changed its store.
struct StoreChanged {
  std::string plural;
};
// A new inventory was published (queued once: a later one replaces it).
struct InventoryPublished {
  std::shared_ptr<const Inventory> inventory;
};

enum class ClaimKind { kPci, kUsb };
enum class ClaimAsk { kEnable, kDisable };

// The device owner's answer to one claim's request.
struct ClaimAnswered {
  ClaimKind kind = ClaimKind::kPci;
  std::string claim;  // the claim's name
  ClaimAsk ask = ClaimAsk::kEnable;
  ClaimOutcome outcome;
};

// Who asked the device owner about VFs (projection/controllers.h).
enum class VfAsker { kSriovNetwork, kSriovGpu, kVfClaim };

// The device owner's answer to one SR-IOV object's or VFClaim's request. `ask` numbers the
// request (its asker counts them): an answer to an ask since replaced is dropped.
struct VfAnswered {
  VfAsker asker = VfAsker::kSriovNetwork;
  std::string name;  // the object's name
  uint64_t ask = 0;
  VfOutcome outcome;
};

// From the claims controller to the KubeVirt controller, after each pass over the claims: the
// permittedHostDevices entries this node's enabled claims need, and the names of the PCI claims
// it handles (a live claim not among them is another node's, whose resource must stay).
struct ClaimsInUse {
  std::set<PciHostDevice> entries;
  std::set<std::string> pci_claims;
};

// The same from the VFClaim controller: one entry per resource serving this node's VFClaims'
// VFs, and the names of the VFClaims it handles.
struct VfClaimsInUse {
  std::set<PciHostDevice> entries;
  std::set<std::string> vf_claims;
};

// The device owner's answer to one VGPUDevice's request; `ask` as VfAnswered's.
struct VgpuAnswered {
  std::string name;  // the object's name
  uint64_t ask = 0;
  VgpuOutcome outcome;
};

using Message = std::variant<StoreListed, StoreChanged, InventoryPublished, ClaimAnswered,
                             ClaimsInUse, VfAnswered, VfClaimsInUse, VgpuAnswered>;

// For std::visit with one lambda per alternative.
template <typename... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <typename... F>
Overloaded(F...) -> Overloaded<F...>;

// The writes made (ProjectionStats), counted by the controllers, read by stats().
class Counters {
 public:
  void Add(const ProjectionStats& delta) {
    MutexLock lock(&mu_);
    stats_.creates += delta.creates;
    stats_.status_patches += delta.status_patches;
    stats_.deletes += delta.deletes;
    stats_.failures += delta.failures;
    stats_.relists += delta.relists;
    stats_.claim_writes += delta.claim_writes;
    stats_.slice_writes += delta.slice_writes;
  }
  ProjectionStats Get() const {
    MutexLock lock(&mu_);
    return stats_;
  }

 private:
  mutable Mutex mu_;
  ProjectionStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pcid::projection
