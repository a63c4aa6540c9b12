// File: projection/controllers.h
//
// The projection's controllers, as client-go's: each reads the informers' stores (never the
// network), decides, and writes only through the API (a KubeCaller), recording each write's
// answer in the store so that a wake-up before the watch's echo writes nothing twice. Each has
// its own jittered back-off (pcid::Backoff, 0.5 s to 30 s) for failed writes, due by an
// injected Clock.
//
//   DeviceController   PCIDevice / USBDevice objects of this node from the inventory.
//   ClaimController    PCIDeviceClaims and USBDeviceClaims of this node: asks the device owner
//                      (ClaimHandler), writes finalizers and status; tells the KubeVirt
//                      controller which entries its claims need (ClaimsInUse).
//   KubeVirtController KubeVirt's permittedHostDevices entries for our claims and VFClaims.
//   SriovController    SRIOVNetworkDevice / SRIOVGPUDevice objects of this node from the
//                      inventory; their spec asks the device owner (SriovHandler) for VF counts,
//                      their status shows the answer.
//   VfClaimController  VFClaims of this node: finalizer, the owner's VFs, status; tells the
//                      KubeVirt controller which entries they need (VfClaimsInUse).
//   VgpuController     VGPUDevice objects of this node from the inventory's mdev parents; their
//                      spec asks the device owner (VgpuHandler) for one mdev, their status
//                      shows it.
//   ResourceSliceController  the DRA pool's ResourceSlices (projection/resource_slices.h) from
//                      the inventory's DRA devices.
//
// Threading: all of them live on the projection's controller thread (projection.cc), which hands
// them messages (Handle), calls Reconcile() after each batch and sleeps until the earliest
// NextWake(). Not thread-safe otherwise; the stores and Counters they share are.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "core/backoff.h"
#include "core/clock.h"
#include "projection/claims.h"
#include "projection/kubevirt.h"
#include "projection/messages.h"
#include "projection/mirror.h"
#include "projection/projection.h"
#include "projection/resource_slices.h"
#include "projection/sriov_objects.h"
#include "projection/status_patch.h"
#include "projection/store.h"
#include "projection/vf_claims.h"
#include "projection/vgpu_objects.h"

namespace spdlog {
class logger;
}

namespace pcid::projection {

class EventRecorder;

class KubeCaller;

inline constexpr char kDevicesApiPrefix[] = "/apis/devices.harvesterhci.io/v1beta1/";

// Failed writes are tried again after 0.5 s doubling to 30 s, scaled by 0.75-1.25.
inline constexpr Backoff::Policy kWriteBackoff{std::chrono::milliseconds(500),
                                               std::chrono::milliseconds(30000), 0.25};

// When a controller is next due on its own (a failed write's retry); nullopt = only on news.
class RetryTimer {
 public:
  RetryTimer(const Clock& clock, Backoff::Policy policy) : clock_(clock), backoff_(policy) {}
  void Succeeded() {
    backoff_.Reset();
    due_.reset();
  }
  void Failed() { due_ = clock_.Now() + backoff_.Next(); }
  // Not due any more, the back-off kept (the next failure waits longer).
  void Clear() { due_.reset(); }
  bool Due() const { return due_ && clock_.Now() >= *due_; }
  // The end of a pass that asked the device owner things: after a failed write or a refusal to
  // ask again (`ok` false), a pass after the back-off (a retry already pending keeps its time:
  // passes meanwhile do not push it back; `was_due`: this pass was that retry); with answers
  // awaited (`asked`), none (they bring the next pass; the back-off is kept until they succeed);
  // otherwise the back-off starts over.
  void EndPass(bool ok, bool asked, bool was_due) {
    if (!ok) {
      if (was_due || !due_) Failed();
    } else if (asked) {
      Clear();
    } else {
      Succeeded();
    }
  }
  std::optional<Clock::time_point> due() const { return due_; }

 private:
  const Clock& clock_;
  Backoff backoff_;
  std::optional<Clock::time_point> due_;
};

// One write a controller makes, its answer recorded in `store` (a DELETE forgets the object) so
// that a pass before the watch's echo does not write it again; false when it failed (counted and
// logged with `what`). After a transport failure (the server is away) `away` is set, and a write
// made while it is set fails at once: no point failing every write of the pass.
bool WriteObject(KubeCaller& api, Store& store, Counters& counters, spdlog::logger& log, bool& away,
                 const std::string& name, std::string_view method, const std::string& path,
                 const std::string& body, const std::string& content_type,
                 const ProjectionStats& counted, const char* what);

// DeleteOptions that delete only the object at `resource_version` (the one the controller saw).
std::string DeleteIfUnchanged(const std::string& resource_version);

class DeviceController {
 public:
  DeviceController(std::string node, Store& pci, Store& usb, KubeCaller& api, const Clock& clock,
                   Counters& counters, spdlog::logger& log);

  // InventoryPublished: the objects wanted; StoreListed / StoreChanged of pcidevices or
  // usbdevices: what the server holds changed.
  void Handle(const Message& message);
  // Makes the writes that take the server to the inventory, once there is an inventory and both
  // stores are listed, when something changed or a retry is due. A write that fails is retried
  // after the back-off (or on the next change); a transport failure stops the pass (the server
  // is away: no point failing every write).
  void Reconcile();
  std::optional<Clock::time_point> NextWake() const { return retry_.due(); }

 private:
  const std::string node_;
  Store& pci_;
  Store& usb_;
  KubeCaller& api_;
  Counters& counters_;
  spdlog::logger& log_;
  RetryTimer retry_;
  std::shared_ptr<const Inventory> inventory_;
  Desired desired_;
  bool dirty_ = false;
};

class ClaimController {
 public:
  // `post` hands the owner's answers (ClaimAnswered) back to the controller thread; any thread.
  // `events` (optional) records a Warning Event on a claim for each refusal of its device.
  ClaimController(std::string node, Store& pci_claims, Store& usb_claims, KubeCaller& api,
                  ClaimHandler owner, std::function<void(Message)> post, const Clock& clock,
                  Counters& counters, spdlog::logger& log, EventRecorder* events = nullptr);

  // ClaimAnswered: the owner's answer; InventoryPublished: which USBDevices are ours.
  void Handle(const Message& message);
  // Plans every claim (projection/claims.h) and carries the steps out: asks the owner, writes
  // finalizers and status. A refusal worth asking again (DeviceInUse, DeviceNotFound) is asked
  // again only once the back-off is due, however many passes come meanwhile; the back-off
  // grows while the owner keeps refusing. Once, after the first list of PCI claims, asks the
  // owner to give back
  // devices enabled for claims that no longer exist (the sweep). Returns what the KubeVirt
  // controller needs once the inventory is there and both claim stores are listed.
  std::optional<ClaimsInUse> Reconcile();
  std::optional<Clock::time_point> NextWake() const { return retry_.due(); }

  // For tests: the memory of each claim between passes.
  const std::map<std::string, ClaimState>& pci_states() const { return pci_states_; }
  const std::map<std::string, ClaimState>& usb_states() const { return usb_states_; }

 private:
  // One plural's steps; false when a write failed or a step asked to be retried later. `asked`
  // is set when the owner was asked something.
  bool Serve(ClaimKind kind, bool& asked);
  ClaimScope Scope(ClaimKind kind) const;
  ClaimsInUse InUse() const;
  // A Warning Event on the claim for a refusal (when events_ is set); remembered, so that its
  // status write does not report it again.
  void Report(ClaimKind kind, const std::string& claim, const ClaimOutcome& refused,
              const char* action);

  const std::string node_;
  Store& pci_claims_;
  Store& usb_claims_;
  KubeCaller& api_;
  ClaimHandler owner_;
  std::function<void(Message)> post_;
  Counters& counters_;
  spdlog::logger& log_;
  EventRecorder* events_;
  RetryTimer retry_;
  std::shared_ptr<const Inventory> inventory_;
  std::map<std::string, ClaimState> pci_states_, usb_states_;
  std::map<std::pair<ClaimKind, std::string>, std::string> reported_;  // reason + message
  bool swept_ = false;      // the start-up sweep of PCI claims sent
  bool usb_swept_ = false;  // and of USB claims
};

class KubeVirtController {
 public:
  // `vf_claims`: the VFClaims' store, nullptr when SR-IOV is not served.
  KubeVirtController(std::string node, Store& kubevirts, Store& pci_claims, Store* vf_claims,
                     KubeCaller& api, KubeVirtRetry retry, const Clock& clock, spdlog::logger& log);

  // ClaimsInUse, VfClaimsInUse: the entries wanted; InventoryPublished: the mdev types served.
  void Handle(const Message& message);
  // Adds the entries our claims and VFClaims need and removes those our released ones needed,
  // unless a live claim or VFClaim of another node still uses the resource; checked against
  // what KubeVirt's object holds (its store), so an entry someone else removed comes back.
  void Reconcile();
  std::optional<Clock::time_point> NextWake() const { return retry_.due(); }

 private:
  // Resources of `remove` that a live claim or VFClaim of another node still uses; nullopt
  // when that could not be read.
  std::optional<std::set<std::string>> UsedElsewhere(const std::set<std::string>& remove);
  // Mdev resources of `remove` another node still serves: its kubelet reports them in the
  // Node's status.allocatable. nullopt when the nodes could not be read.
  std::optional<std::set<std::string>> MdevsServedElsewhere(const std::set<std::string>& remove);

  std::string node_;
  Store& kubevirts_;
  Store& pci_claims_;
  Store* vf_claims_;
  KubeCaller& api_;
  KubeVirtRetry conflict_retry_;
  spdlog::logger& log_;
  RetryTimer retry_;
  std::optional<ClaimsInUse> wanted_;
  VfClaimsInUse vf_wanted_;
  // One entry per mdev type and per vendor vGPU resource this node serves.
  std::set<PciHostDevice> mdev_wanted_;
  std::set<PciHostDevice> applied_;  // our entries last made sure of
  bool absent_logged_ = false;       // "no KubeVirt object" said once
};

// What one SR-IOV object asked of the device owner, and the answer.
struct VfCountState {
  std::optional<CountAsk> asked;    // the last ask (count nullopt: give back)
  uint64_t ask_id = 0;              // its number; only the answer carrying it counts
  std::optional<VfOutcome> answer;  // to `asked`; unset while in flight
  // The answer's VFs (the PF's VFs now), until an inventory published after it shows them.
  std::optional<std::vector<std::string>> fresh_vfs;
  bool retry = false;  // a refusal waiting for the back-off
  bool again = false;  // the back-off is over: ask `asked` again
  bool in_flight() const { return asked && !answer; }
};

class SriovController {
 public:
  // `post` hands the owner's answers (VfAnswered) back to the controller thread; any thread.
  // `wall` gives conditions' lastTransitionTime.
  SriovController(std::string node, Store& network, Store& gpu, KubeCaller& api, SriovHandler owner,
                  std::function<void(Message)> post, const Clock& clock, WallClock wall,
                  Counters& counters, spdlog::logger& log, EventRecorder* events = nullptr);

  // InventoryPublished: the PFs offered; VfAnswered (kSriovNetwork, kSriovGpu): the owner's
  // answer to the ask it numbers.
  void Handle(const Message& message);
  // Once there is an inventory and both stores are listed: creates this node's missing objects
  // and deletes those whose PF is gone (never touches a spec), then for every object asks the
  // owner when its spec asks something other than what was last asked (numVFs 0 / enabled=false
  // and a deleted object ask to give the count back), and writes status where it differs. An
  // invalid spec asks nothing and says why (InvalidSpec). A refusal worth asking again is asked
  // again only once the back-off is due, or when the spec changes.
  void Reconcile();
  std::optional<Clock::time_point> NextWake() const { return retry_.due(); }

  // For tests: each object's memory between passes.
  const std::map<std::string, VfCountState>& states(SriovKind kind) const {
    return kind == SriovKind::kNetwork ? network_states_ : gpu_states_;
  }

 private:
  Store& StoreOf(SriovKind kind) { return kind == SriovKind::kNetwork ? network_ : gpu_; }
  std::map<std::string, VfCountState>& StatesOf(SriovKind kind) {
    return kind == SriovKind::kNetwork ? network_states_ : gpu_states_;
  }
  // Creates and deletes; false when a write failed.
  bool Mirror();
  // One kind's asks and status writes; false when a write failed or a refusal waits for the
  // back-off. `asked` is set when the owner was asked something.
  bool Serve(SriovKind kind, bool& asked);
  void Ask(SriovKind kind, const std::string& name, const CountAsk& ask, VfCountState& st);
  // One write; false when it failed. After a transport failure (the server is away) the pass
  // makes no more writes.
  bool Write(Store& store, const std::string& name, std::string_view method,
             const std::string& path, const std::string& body, const std::string& content_type,
             const ProjectionStats& counted, const char* what);

  const std::string node_;
  Store& network_;
  Store& gpu_;
  KubeCaller& api_;
  SriovHandler owner_;
  std::function<void(Message)> post_;
  WallClock wall_;
  Counters& counters_;
  spdlog::logger& log_;
  EventRecorder* events_;
  RetryTimer retry_;
  std::shared_ptr<const Inventory> inventory_;
  std::set<PciAddress> protected_;  // PFs never offered (ProtectedSriovPfs)
  SriovOffers offers_;              // from the inventory alone
  SriovOffers current_;  // this pass's: offers_ and the objects of PFs without interfaces
  std::set<std::string> vgpu_objects_;  // the VGPUDevice objects offered (status.vGPUDevices)
  std::vector<std::string> skipped_;    // last said, so that each reason is logged once
  std::map<std::string, VfCountState> network_states_, gpu_states_;
  uint64_t next_ask_ = 0;
  bool away_ = false;  // a write of this pass failed in transport
};

// What one VFClaim asked of the device owner.
struct VfClaimAsk {
  VfClaimSpec spec;
  bool release = false;
  friend bool operator==(const VfClaimAsk&, const VfClaimAsk&) = default;
};

// A VFClaim's memory between passes.
struct VfClaimState {
  std::optional<VfClaimAsk> asked;
  uint64_t ask_id = 0;
  std::optional<VfOutcome> answer;  // to `asked`; unset while in flight
  // The VFs the owner holds for the claim (an answer that gave them) and the spec they were
  // asked for; given back before a changed spec is asked, and when the claim goes.
  std::optional<VfOutcome> held;
  VfClaimSpec held_spec;
  bool retry = false;
  bool again = false;
  bool in_flight() const { return asked && !answer; }
};

class VfClaimController {
 public:
  VfClaimController(std::string node, Store& claims, Store& network, KubeCaller& api,
                    SriovHandler owner, std::function<void(Message)> post, const Clock& clock,
                    WallClock wall, Counters& counters, spdlog::logger& log,
                    EventRecorder* events = nullptr);

  // VfAnswered (kVfClaim): the owner's answer; InventoryPublished: the VFs' IDs.
  void Handle(const Message& message);
  // Once both stores are listed (SRIOVNetworkDevices set the claims' VF limits), for each claim
  // whose spec.nodeName is this node: a checked spec gets our finalizer, then is asked of the
  // owner (a changed spec gives the old VFs back first, but a raised count is asked at once), and
  // status shows the answer; an invalid one gets Ready=False InvalidSpec and asks nothing. A
  // claim being deleted gives its VFs back, then loses our finalizer; one gone without our
  // finalizer's turn (force-deleted, moved to another node) gives them back all the same. Other
  // nodes' claims are never touched. Returns what the KubeVirt controller needs once the
  // inventory is there and the stores are listed.
  std::optional<VfClaimsInUse> Reconcile();
  std::optional<Clock::time_point> NextWake() const { return retry_.due(); }

  // For tests.
  const std::map<std::string, VfClaimState>& states() const { return states_; }

 private:
  VfClaimsInUse InUse() const;
  void Ask(const std::string& name, const VfClaimAsk& ask, VfClaimState& st);
  bool Write(const std::string& name, const std::string& path, const std::string& body);

  const std::string node_;
  Store& claims_;
  Store& network_;
  KubeCaller& api_;
  SriovHandler owner_;
  std::function<void(Message)> post_;
  WallClock wall_;
  Counters& counters_;
  spdlog::logger& log_;
  EventRecorder* events_;
  RetryTimer retry_;
  std::shared_ptr<const Inventory> inventory_;
  std::map<std::string, VfClaimState> states_;
  std::map<std::string, unsigned> max_vfs_;  // this pass's limits
  uint64_t next_ask_ = 0;
  bool away_ = false;
  bool swept_ = false;  // the start-up VfClaimSweep sent
};

// What one VGPUDevice asked of the device owner, and the answer.
struct VgpuObjectState {
  std::optional<VgpuAsk> asked;
  uint64_t ask_id = 0;
  std::optional<VgpuOutcome> answer;  // to `asked`; unset while in flight
  bool retry = false;                 // a refusal waiting for the back-off
  bool again = false;                 // the back-off is over: ask `asked` again
  bool in_flight() const { return asked && !answer; }
};

class VgpuController {
 public:
  // `post` hands the owner's answers (VgpuAnswered) back to the controller thread; any thread.
  // `wall` gives conditions' lastTransitionTime.
  VgpuController(std::string node, Store& objects, KubeCaller& api, VgpuHandler owner,
                 std::function<void(Message)> post, const Clock& clock, WallClock wall,
                 Counters& counters, spdlog::logger& log, EventRecorder* events = nullptr);

  // InventoryPublished: the functions offered and their types; VgpuAnswered: the owner's answer
  // to the ask it numbers.
  void Handle(const Message& message);
  // Once the inventory has mdevs and the store is listed: creates this node's missing objects
  // and deletes those whose function is gone, unless they are enabled or still have an mdev
  // recorded (a VF comes back after a reboot only once its PF's VFs are made again; the mdev is
  // made again then). For every object: asks the owner when its spec asks something other than
  // what was last asked (enabled=false and a deleted object give the mdev back), and writes status
  // where it differs. An invalid spec asks nothing and says why. A refusal worth asking again is
  // asked again once the back-off is due, or when the spec changes.
  void Reconcile();
  std::optional<Clock::time_point> NextWake() const { return retry_.due(); }

  // For tests: each object's memory between passes.
  const std::map<std::string, VgpuObjectState>& states() const { return states_; }

 private:
  bool Mirror();
  bool Serve(bool& asked);
  void Ask(const std::string& name, const VgpuAsk& ask, VgpuObjectState& st);
  bool Write(const std::string& name, std::string_view method, const std::string& path,
             const std::string& body, const std::string& content_type,
             const ProjectionStats& counted, const char* what);

  const std::string node_;
  Store& objects_;
  KubeCaller& api_;
  VgpuHandler owner_;
  std::function<void(Message)> post_;
  WallClock wall_;
  Counters& counters_;
  spdlog::logger& log_;
  EventRecorder* events_;
  RetryTimer retry_;
  std::shared_ptr<const Inventory> inventory_;
  std::map<std::string, VgpuOffer> offers_;
  std::map<std::string, VgpuObjectState> states_;
  uint64_t next_ask_ = 0;
  bool away_ = false;
};

class ResourceSliceController {
 public:
  // `slices`: this node's slices of our driver (the informer selects on spec.nodeName and
  // spec.driver).
  ResourceSliceController(std::string node, Store& slices, KubeCaller& api, const Clock& clock,
                          Counters& counters, spdlog::logger& log);

  // InventoryPublished: the pool wanted; StoreListed / StoreChanged of resourceslices: what the
  // server holds (the kubelet deletes a node's slices at its start: they are written again).
  void Handle(const Message& message);
  // Zero writes when the server holds the pool as wanted, at one generation. Otherwise the
  // generation goes one past the highest seen and every slice is written with it: obsolete ones
  // deleted first, then the slices whose devices changed (one, when a device came or went:
  // PoolSlices keeps every other slice's devices), then the others. A failed write is retried
  // after the back-off.
  void Reconcile();
  std::optional<Clock::time_point> NextWake() const { return retry_.due(); }
  int64_t generation() const { return generation_; }

 private:
  bool UpToDate(const Store::Objects& observed) const;
  // desired_ from inventory_, keeping the last layout (or the server's, at the first time).
  void Lay(const Store::Objects& observed);
  const std::string node_;
  Store& slices_;
  KubeCaller& api_;
  Counters& counters_;
  spdlog::logger& log_;
  RetryTimer retry_;
  std::shared_ptr<const Inventory> inventory_;
  bool inventory_changed_ = false;  // desired_ not yet computed from inventory_
  bool laid_out_ = false;           // desired_ is the layout; until then, the server's slices are
  std::vector<SliceContent> desired_;
  PoolDeviceCache objects_;              // PoolSlices' device objects, reused while unchanged
  int64_t generation_ = 0;               // of the pool as last written or found
  std::optional<std::string> node_uid_;  // the Node's, for the owner reference; "" = unknown
  bool dirty_ = false;
};

}  // namespace pcid::projection
