// File: projection/claims.h
//
// PCIDeviceClaims of this node: what each asks of the device owner (enable / disable through
// vfio/, source "claim") and what the claim's status and finalizer should then be. A claim is
// ours when spec.nodeName is this node; others are never touched. Deleting a claim first gives
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
};

struct ClaimStep {
  enum class Kind {
    kAskEnable,        // owner: enable `address` for the claim
    kAskDisable,       // owner: disable `address`
    kAddFinalizer,     // PATCH metadata.finalizers (+ ours), resourceVersion precondition
    kRemoveFinalizer,  // PATCH metadata.finalizers (- ours), resourceVersion precondition
    kWriteStatus,      // PATCH /status with `body`
    kForget,           // the claim is gone and its device given back: drop its state
  } kind;
  std::string claim;
  std::string address;
  std::string body;  // the merge patch for kAddFinalizer, kRemoveFinalizer, kWriteStatus
};

// The next steps for every claim, given what the server holds (`claims`: this plural's observed
// objects) and what the mirror remembers. Claims that vanished without our finalizer's turn
// (force-deleted) still get their device given back.
std::vector<ClaimStep> PlanClaims(const std::map<std::string, ObservedObject>& claims,
                                  std::map<std::string, ClaimState>& states,
                                  const std::string& node);

}  // namespace pcid::projection
