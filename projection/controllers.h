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
//   KubeVirtController KubeVirt's permittedHostDevices entries for our claims.
//
// Threading: all three live on the projection's controller thread (projection.cc), which hands
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
#include "projection/store.h"

namespace spdlog {
class logger;
}

namespace pcid::projection {

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
  std::optional<Clock::time_point> due() const { return due_; }

 private:
  const Clock& clock_;
  Backoff backoff_;
  std::optional<Clock::time_point> due_;
};

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
  ClaimController(std::string node, Store& pci_claims, Store& usb_claims, KubeCaller& api,
                  ClaimHandler owner, std::function<void(Message)> post, const Clock& clock,
                  Counters& counters, spdlog::logger& log);

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

  const std::string node_;
  Store& pci_claims_;
  Store& usb_claims_;
  KubeCaller& api_;
  ClaimHandler owner_;
  std::function<void(Message)> post_;
  Counters& counters_;
  spdlog::logger& log_;
  RetryTimer retry_;
  std::shared_ptr<const Inventory> inventory_;
  std::map<std::string, ClaimState> pci_states_, usb_states_;
  bool swept_ = false;
};

class KubeVirtController {
 public:
  KubeVirtController(Store& kubevirts, Store& pci_claims, KubeCaller& api, KubeVirtRetry retry,
                     const Clock& clock, spdlog::logger& log);

  // ClaimsInUse: the entries wanted.
  void Handle(const Message& message);
  // Adds the entries our claims need and removes those our released claims needed, unless a
  // live claim of another node still uses the resource; checked against what KubeVirt's object
  // holds (its store), so an entry someone else removed comes back.
  void Reconcile();
  std::optional<Clock::time_point> NextWake() const { return retry_.due(); }

 private:
  Store& kubevirts_;
  Store& pci_claims_;
  KubeCaller& api_;
  KubeVirtRetry conflict_retry_;
  spdlog::logger& log_;
  RetryTimer retry_;
  std::optional<ClaimsInUse> wanted_;
  std::set<PciHostDevice> applied_;  // our entries last made sure of
  bool absent_logged_ = false;       // "no KubeVirt object" said once
};

}  // namespace pcid::projection
