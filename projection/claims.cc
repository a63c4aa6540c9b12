#include "projection/claims.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>

#include <algorithm>
#include <set>

#include "core/json_writer.h"
#include "core/naming.h"
#include "core/pci_address.h"

namespace pcid::projection {
namespace {

// {"status": {...}} as the claim should show `outcome`; nullopt when the server already shows it.
// PCI: passthroughEnabled, kernelDriverToUnbind; USB: nodeName, pciAddress (Harvester's fields);
// both with a PassthroughEnabled condition.
// `waiting`: a refused release; the device is still passed through, and the condition says why
// the claim's deletion waits.
std::optional<std::string> StatusPatch(const ObservedObject& c, const ClaimOutcome& outcome,
                                       const std::string& node, const std::string& address,
                                       const ClaimScope& scope,
                                       const ClaimOutcome* waiting = nullptr) {
  auto write_status = [&](JsonWriter& status) {
    status.BeginObject();
    // Only fields the CRDs' schemas hold: anything else is pruned by the server, would never
    // compare equal and be written again on every event.
    if (scope.usb) {
      auto it = scope.usb_devices.find(address);
      status.Key("nodeName").String(node);
      status.Key("pciAddress").String(it == scope.usb_devices.end() ? "" : it->second);
    } else {
      status.Key("passthroughEnabled").Bool(outcome.ok);
      status.Key("kernelDriverToUnbind").String(outcome.ok ? outcome.original_driver : "");
    }
    status.Key("conditions").BeginArray().BeginObject();
    status.Key("type").String("PassthroughEnabled");
    status.Key("status").String(outcome.ok ? "True" : "False");
    status.Key("reason").String(waiting != nullptr ? waiting->reason
                                : outcome.ok       ? "Enabled"
                                                   : outcome.reason);
    status.Key("message").String(
        waiting != nullptr ? absl::StrCat("deletion waits: ", waiting->message) : outcome.message);
    status.EndObject().EndArray();
    status.EndObject();
  };
  JsonWriter status;
  write_status(status);
  auto want = DecodeStatus(status.str());
  if (want.ok() && *want == c.status) return std::nullopt;
  JsonWriter patch;
  patch.BeginObject().Key("status");
  write_status(patch);
  patch.EndObject();
  return patch.str();
}

}  // namespace

std::string FinalizersPatch(const ObservedObject& c, bool add) {
  std::vector<std::string> list;
  for (const std::string& f : c.finalizers) {
    if (f != kClaimFinalizer) list.push_back(f);
  }
  if (add) list.push_back(kClaimFinalizer);
  JsonWriter w;
  w.BeginObject().Key("metadata").BeginObject();
  w.Key("resourceVersion").String(c.resource_version);  // lose no one else's finalizer
  w.Key("finalizers").BeginArray();
  for (const std::string& f : list) w.String(f);
  w.EndArray().EndObject().EndObject();
  return w.str();
}

bool HasFinalizer(const ObservedObject& c) {
  return std::find(c.finalizers.begin(), c.finalizers.end(), kClaimFinalizer) != c.finalizers.end();
}

std::vector<ClaimStep> PlanClaims(const std::map<std::string, ObservedObject>& claims,
                                  std::map<std::string, ClaimState>& states,
                                  const std::string& node, const ClaimScope& scope) {
  std::vector<ClaimStep> out;
  std::set<std::string> ours;  // claims of this node on the server
  for (const auto& [name, c] : claims) {
    if (scope.usb) {
      if (!scope.usb_devices.count(name) && !states.count(name)) continue;  // another node's
    } else {
      // Another node's; one that was ours and now names another node counts as gone below (its
      // device given back).
      auto node_it = c.spec.find("nodeName");
      if (node_it == c.spec.end() || node_it->second != node) continue;
    }
    ours.insert(name);
    ClaimState& st = states[name];
    if (c.deleting) {
      if (!HasFinalizer(c)) continue;  // not ours to hold
      if (st.address.empty() && !st.enable_asked) {
        // Unknown to this run (deleted while the agent was down): give the device back all the
        // same, if the claim names one; the owner answers "not enabled" when there is nothing.
        const std::string named = scope.usb                 ? name
                                  : c.spec.count("address") ? c.spec.at("address")
                                                            : "";
        if (scope.usb || IsPciAddress(named)) {
          st.address = named;
          st.enable_asked = true;
          st.enabled = ClaimOutcome{true, "", "", ""};
        }
      }
      if (!st.enabled || !st.enabled->ok) {
        out.push_back(
            {ClaimStep::Kind::kRemoveFinalizer, name, st.address, FinalizersPatch(c, false)});
        continue;
      }
      if (!st.disable_asked) {
        st.disable_asked = true;
        out.push_back({ClaimStep::Kind::kAskDisable, name, st.address, ""});
      } else if (st.disabled && st.disabled->ok) {
        out.push_back(
            {ClaimStep::Kind::kRemoveFinalizer, name, st.address, FinalizersPatch(c, false)});
      } else if (st.disabled) {
        // Refused (a pod holds it): still passed through; asked again after a back-off.
        if (auto patch = StatusPatch(c, *st.enabled, node, st.address, scope, &*st.disabled)) {
          out.push_back({ClaimStep::Kind::kWriteStatus, name, st.address, *patch});
        }
        st.retry = true;
        out.push_back({ClaimStep::Kind::kRetryLater, name, st.address, ""});
      }
      continue;
    }
    // A live claim: validated before anything reaches the owner.
    std::string address = scope.usb ? name : c.spec.count("address") ? c.spec.at("address") : "";
    std::optional<ClaimOutcome> refused;
    if (scope.usb) {
      if (!scope.usb_devices.count(name)) {
        refused =
            ClaimOutcome{false, "", "DeviceNotFound", "the USB device is gone from this node"};
      }
    } else if (!c.spec_not_strings.empty()) {
      refused = ClaimOutcome{
          false, "", "InvalidSpec",
          absl::StrCat("spec fields must be strings: ", absl::StrJoin(c.spec_not_strings, ", "))};
    } else if (!IsPciAddress(address)) {
      refused = ClaimOutcome{
          false, "", "InvalidAddress",
          absl::StrCat("\"", address.substr(0, 64), "\" is not a PCI address (DDDD:BB:DD.F)")};
      address.clear();
    } else if (const std::string want = PciObjectName(node, *ParsePciAddress(address));
               name != want) {
      // One claim per device: two claims of one address would share one "claim" source, and the
      // first deleted would release the other's device.
      refused = ClaimOutcome{false, "", "InvalidName",
                             absl::StrCat("a PCIDeviceClaim is named after its PCIDevice: \"", want,
                                          "\" for ", address)};
      address.clear();
    }
    if (st.disable_asked && st.address == address) {
      // A live claim whose device is being (or was) given back: the claim was deleted and made
      // again under the same name before its deletion was seen (a watch cut meanwhile). The
      // release is awaited, then the new claim is served from the start.
      if (!st.disabled) continue;
      if (st.disabled->ok) st = ClaimState{};
    }
    if (st.enable_asked && st.address != address) {
      // The address was edited: the old device is given back first, then the new one claimed.
      if (!st.disable_asked && st.enabled && st.enabled->ok) {
        st.disable_asked = true;
        out.push_back({ClaimStep::Kind::kAskDisable, name, st.address, ""});
        continue;
      }
      if (st.disable_asked && !st.disabled) continue;  // waiting
      if (st.disabled && !st.disabled->ok) {
        // The old device could not be given back (a pod holds it): not forgotten, asked again.
        st.retry = true;
        out.push_back({ClaimStep::Kind::kRetryLater, name, st.address, ""});
        continue;
      }
      st = ClaimState{};
    }
    st.address = address;
    if (refused) {
      st.enable_asked = true;
      st.enabled = refused;
    } else if (!HasFinalizer(c)) {
      out.push_back({ClaimStep::Kind::kAddFinalizer, name, address, FinalizersPatch(c, true)});
      continue;  // its MODIFIED event brings the claim back here
    } else if (!st.enable_asked) {
      st.enable_asked = true;
      out.push_back({ClaimStep::Kind::kAskEnable, name, address, ""});
      continue;
    }
    if (st.enabled) {
      if (auto patch = StatusPatch(c, *st.enabled, node, address, scope)) {
        out.push_back({ClaimStep::Kind::kWriteStatus, name, address, *patch});
      }
      // The owner did not find the device, or a pod of another plugin holds it: it may come
      // (VFs created later, a card plugged), the pod may go.
      if (!refused && !st.enabled->ok &&
          (st.enabled->reason == "DeviceNotFound" || st.enabled->reason == "DeviceInUse")) {
        st.retry = true;
        out.push_back({ClaimStep::Kind::kRetryLater, name, address, ""});
      }
    }
  }
  // Claims gone from the server (force-deleted, or deleted before we held them): their devices
  // are given back all the same.
  for (auto& [name, st] : states) {
    if (ours.count(name) || (st.enable_asked && !st.enabled)) continue;  // answer pending
    if (!st.enabled || !st.enabled->ok || (st.disabled && st.disabled->ok)) {
      out.push_back({ClaimStep::Kind::kForget, name, st.address, ""});
    } else if (!st.disable_asked) {
      st.disable_asked = true;
      out.push_back({ClaimStep::Kind::kAskDisable, name, st.address, ""});
    } else if (st.disabled) {
      st.retry = true;  // refused (a pod holds it): asked again after a back-off
      out.push_back({ClaimStep::Kind::kRetryLater, name, st.address, ""});
    }
  }
  return out;
}

void ReleaseRetries(std::map<std::string, ClaimState>& states) {
  for (auto& [name, st] : states) {
    if (!st.retry) continue;
    st.retry = false;
    if (st.disabled && !st.disabled->ok) {
      st.disable_asked = false;
      st.disabled.reset();
    } else if (st.enabled && !st.enabled->ok) {
      st.enable_asked = false;
      st.enabled.reset();
    }
  }
}

}  // namespace pcid::projection
