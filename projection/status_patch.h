// File: projection/status_patch.h
//
// Status the projection owns on objects whose spec a user owns (SRIOVNetworkDevice,
// SRIOVGPUDevice, VFClaim): the merge patch of `/status`, made only when a field we own differs
// from what the server holds, and the `Ready` condition. A condition's lastTransitionTime moves
// only when its status does (as Kubernetes' meta.SetStatusCondition), so a status that says the
// same thing compares equal and a quiet node writes nothing. Pure functions; any thread.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/json_writer.h"
#include "projection/objects.h"

namespace pcid::projection {

// RFC 3339 UTC to the second ("2026-12-04T18:15:28Z"), what lastTransitionTime shows. Shown only:
// wall time never decides anything (core/clock.h).
using WallClock = std::function<std::string()>;
std::string Rfc3339Now();
// A metav1.MicroTime now ("2026-12-04T18:15:28.123456Z"): Events' and Leases' timestamps.
std::string MicroTimeNow();

// One condition of status.conditions, metav1.Condition's fields.
struct Condition {
  std::string type = "Ready";
  bool status = false;
  std::string reason;  // CamelCase
  std::string message;
};

// Why a user's spec asks nothing of the device owner: condition Ready=False, reason InvalidSpec.
struct SpecRefusal {
  std::string message;
};

// Refuses a spec whose `address` is not `address` or whose `nodeName` is not `node` (the object's
// name and label already say both); `what` names the device ("the PF").
std::optional<SpecRefusal> RefuseOtherTarget(const ObservedObject& o, const std::string& address,
                                             const std::string& node, const char* what);
// Whether the spec has field `key`, of whatever type (a field of the wrong type is refused rather
// than read as its zero value).
bool SpecHas(const ObservedObject& o, std::string_view key);

// Writes `[c]` as the value of `conditions` (the only condition we keep: any other is dropped).
// lastTransitionTime is the observed one when `observed`'s status already has a condition of this
// type with the same status, `now` otherwise.
void WriteConditions(JsonWriter& w, const Condition& c, const ObservedObject& observed,
                     std::string_view now);

// {"status": {...}} with what `write_status` writes (one object, our fields only), or nullopt when
// every field it writes already holds that value on the server. Fields we do not write (another
// writer's) are neither compared nor touched: a merge patch leaves them alone.
std::optional<std::string> StatusPatchIfChanged(
    const ObservedObject& observed, const std::function<void(JsonWriter&)>& write_status);

}  // namespace pcid::projection
