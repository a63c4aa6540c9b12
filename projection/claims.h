// File: projection/claims.h
//
// PCIDeviceClaims and USBDeviceClaims of this node: what each asks of the device owner (PCI:
// enable / disable through vfio/, source "claim"; USB: serve / stop its plugin) and what the
// claim's status and finalizer should then be. A PCI claim is ours when spec.nodeName is this
// node; a USB claim (it has no node in its spec) when it names one of this node's USBDevices.
// Others are never touched. Deleting a claim first gives
// the device back (our finalizer holds the object until then); a refused claim (bad address,
// unknown or protected device, device held by a pod) gets passthroughEnabled=false and a
// condition saying why, and changes nothing. Pure values and functions.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "projection/objects.h"

namespace pcid::projection {

inline constexpr char kClaimPlural[] = "pcideviceclaims";
inline constexpr char kUsbClaimPlural[] = "usbdeviceclaims";
inline constexpr char kClaimFinalizer[] = "devices.harvesterhci.io/pcidevices-agent";

// The owner thread's answer to an enable or disable.
struct ClaimOutcome {
  bool ok = false;
  std::string original_driver;  // enable: the driver it had ("" = none)
  std::string reason;           // CamelCase when refused: InvalidAddress, DeviceNotFound, ...
  std::string message;
};

// The mirror's memory of one claim between events.
struct ClaimState {
  std::string address;
  bool enable_asked = false;
  bool disable_asked = false;
  std::optional<ClaimOutcome> enabled;   // answer to the enable
  std::optional<ClaimOutcome> disabled;  // answer to the disable
  // A refusal worth asking again (a pod holds the device, the device is not there yet): the
  // refused answer is kept, and nothing is asked again, until ReleaseRetries().
  bool retry = false;
};

struct ClaimStep {
  enum class Kind {
    kAskEnable,        // owner: enable `address` for the claim
    kAskDisable,       // owner: disable `address`
    kAddFinalizer,     // PATCH metadata.finalizers (+ ours), resourceVersion precondition
    kRemoveFinalizer,  // PATCH metadata.finalizers (- ours), resourceVersion precondition
    kWriteStatus,      // PATCH /status with `body`
    kForget,           // the claim is gone and its device given back: drop its state
    kRetryLater,       // a release refused (a pod holds it) or a device not found yet: call
                       // ReleaseRetries() after a back-off, then plan again
  } kind;
  std::string claim;
  std::string address;
  std::string body;  // the merge patch for kAddFinalizer, kRemoveFinalizer, kWriteStatus
};

// Which claims are ours. PCI: spec.nodeName == node. USB: the claim's name is one of
// `usb_devices` (this node's USBDevice names -> their host controller's PCI address).
struct ClaimScope {
  bool usb = false;
  std::map<std::string, std::string> usb_devices;
};

// The next steps for every claim, given what the server holds (`claims`: this plural's observed
// objects) and what the mirror remembers. Claims that vanished without our finalizer's turn
// (force-deleted) still get their device given back. For USB, `address` in the steps is the
// USBDevice name.
std::vector<ClaimStep> PlanClaims(const std::map<std::string, ObservedObject>& claims,
                                  std::map<std::string, ClaimState>& states,
                                  const std::string& node, const ClaimScope& scope = {});

// Whether `c` carries our finalizer.
bool HasFinalizer(const ObservedObject& c);
// The merge patch that adds (or removes) our finalizer, keeping everyone else's, with `c`'s
// resourceVersion as a precondition (a list of finalizers is replaced whole by a merge patch).
std::string FinalizersPatch(const ObservedObject& c, bool add);

// The back-off of claims that asked for a retry is over: their refused answers are forgotten,
// so that the next PlanClaims asks the owner again.
void ReleaseRetries(std::map<std::string, ClaimState>& states);

}  // namespace pcid::projection
