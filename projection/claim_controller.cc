#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include "core/naming.h"
#include "projection/controllers.h"
#include "projection/events.h"
#include "projection/kube_client.h"

namespace pcid::projection {

ClaimController::ClaimController(std::string node, Store& pci_claims, Store& usb_claims,
                                 KubeCaller& api, ClaimHandler owner,
                                 std::function<void(Message)> post, const Clock& clock,
                                 Counters& counters, spdlog::logger& log, EventRecorder* events)
    : node_(std::move(node)),
      pci_claims_(pci_claims),
      usb_claims_(usb_claims),
      api_(api),
      owner_(std::move(owner)),
      post_(std::move(post)),
      counters_(counters),
      log_(log),
      events_(events),
      retry_(clock, kWriteBackoff) {}

void ClaimController::Handle(const Message& message) {
  std::visit(
      Overloaded{
          [&](const InventoryPublished& m) { inventory_ = m.inventory; },
          [&](const ClaimAnswered& m) {
            ClaimState& st = (m.kind == ClaimKind::kUsb ? usb_states_ : pci_states_)[m.claim];
            (m.ask == ClaimAsk::kEnable ? st.enabled : st.disabled) = m.outcome;
            // Every refusal, retries included (the recorder makes them a series).
            if (!m.outcome.ok) {
              Report(m.kind, m.claim, m.outcome, m.ask == ClaimAsk::kEnable ? "Enable" : "Disable");
            }
          },
          [](const auto&) {},
      },
      message);
}

void ClaimController::Report(ClaimKind kind, const std::string& claim, const ClaimOutcome& refused,
                             const char* action) {
  reported_[{kind, claim}] = refused.reason + "\n" + refused.message;
  if (!events_) return;
  const bool usb = kind == ClaimKind::kUsb;
  events_->Record(api_,
                  DeviceSubject(usb ? usb_claims_ : pci_claims_,
                                usb ? "USBDeviceClaim" : "PCIDeviceClaim", claim),
                  "Warning", refused.reason, action, refused.message);
}

ClaimScope ClaimController::Scope(ClaimKind kind) const {
  ClaimScope scope;
  if (kind == ClaimKind::kPci || !inventory_) return scope;
  scope.usb = true;
  for (const UsbDevice& u : inventory_->usb) {
    if (u.device_class == 0x09) continue;  // hubs are not offered
    scope.usb_devices[UsbObjectName(node_, u)] =
        u.host_controller ? u.host_controller->ToString() : "";
  }
  return scope;
}

std::optional<ClaimsInUse> ClaimController::Reconcile() {
  const bool due = retry_.Due();
  if (due) {
    ReleaseRetries(pci_states_);
    ReleaseRetries(usb_states_);
  }
  bool ok = true;
  bool asked = false;
  if (pci_claims_.synced() && !swept_) {
    swept_ = true;
    ClaimRequest sweep;
    sweep.sweep = true;
    pci_claims_.Read([&](const Store::Objects& claims) {
      for (const auto& [name, c] : claims) {
        auto node = c.spec.find("nodeName");
        auto address = c.spec.find("address");
        if (node != c.spec.end() && node->second == node_ && address != c.spec.end()) {
          sweep.keep.push_back(address->second);
        }
      }
    });
    owner_(std::move(sweep), [](ClaimOutcome) {});
  }
  if (usb_claims_.synced() && !usb_swept_) {
    // USB devices claimed before a restart are in the agent's state file; those whose claims
    // are gone are let go. A USBDeviceClaim is named after its device.
    usb_swept_ = true;
    ClaimRequest sweep{.usb = true, .enable = false, .device = "", .sweep = true, .keep = {}};
    usb_claims_.Read([&](const Store::Objects& claims) {
      for (const auto& [name, c] : claims) sweep.keep.push_back(name);
    });
    owner_(std::move(sweep), [](ClaimOutcome) {});
  }
  if (pci_claims_.synced()) ok &= Serve(ClaimKind::kPci, asked);
  if (inventory_ && usb_claims_.synced()) ok &= Serve(ClaimKind::kUsb, asked);
  retry_.EndPass(ok, asked, due);
  if (!inventory_ || !pci_claims_.synced() || !usb_claims_.synced()) return std::nullopt;
  return InUse();
}

bool ClaimController::Serve(ClaimKind kind, bool& asked) {
  const bool usb = kind == ClaimKind::kUsb;
  Store& store = usb ? usb_claims_ : pci_claims_;
  std::map<std::string, ClaimState>& states = usb ? usb_states_ : pci_states_;
  const ClaimScope scope = Scope(kind);
  const std::vector<ClaimStep> steps = store.Read(
      [&](const Store::Objects& claims) { return PlanClaims(claims, states, node_, scope); });
  bool ok = true;
  for (const ClaimStep& step : steps) {
    const std::string path = absl::StrCat(kDevicesApiPrefix, store.plural(), "/", step.claim);
    absl::StatusOr<KubeResponse> res;
    switch (step.kind) {
      case ClaimStep::Kind::kAskEnable:
      case ClaimStep::Kind::kAskDisable: {
        const ClaimAsk ask =
            step.kind == ClaimStep::Kind::kAskEnable ? ClaimAsk::kEnable : ClaimAsk::kDisable;
        asked = true;
        log_.info("claim {}: {} {}", step.claim, ask == ClaimAsk::kEnable ? "enable" : "disable",
                  step.address);
        owner_(ClaimRequest{.usb = usb,
                            .enable = ask == ClaimAsk::kEnable,
                            .device = step.address,
                            .sweep = false,
                            .keep = {}},
               [post = post_, kind, ask, claim = step.claim](ClaimOutcome outcome) {
                 post(ClaimAnswered{kind, claim, ask, std::move(outcome)});
               });
        continue;
      }
      case ClaimStep::Kind::kForget:
        states.erase(step.claim);
        reported_.erase({kind, step.claim});
        continue;
      case ClaimStep::Kind::kRetryLater:
        ok = false;  // planned again after the back-off
        continue;
      case ClaimStep::Kind::kAddFinalizer:
      case ClaimStep::Kind::kRemoveFinalizer:
        res = api_.Call("PATCH", path, step.body, "application/merge-patch+json");
        break;
      case ClaimStep::Kind::kWriteStatus: {
        res = api_.Call("PATCH", path + "/status", step.body, "application/merge-patch+json");
        // Refusals the planner made itself (an invalid spec, a USB device gone) never reach
        // the owner: reported when their status is written.
        auto st = states.find(step.claim);
        if (st != states.end() && st->second.enabled && !st->second.enabled->ok &&
            !st->second.disable_asked) {
          const ClaimOutcome& refused = *st->second.enabled;
          auto seen = reported_.find({kind, step.claim});
          if (seen == reported_.end() || seen->second != refused.reason + "\n" + refused.message) {
            Report(kind, step.claim, refused, "Enable");
          }
        }
        break;
      }
    }
    if (!res.ok() || res->status / 100 != 2) {
      counters_.Add({.failures = 1, .claim_writes = 1});
      ok = false;
      log_.warn("claim {}: write failed: {}", step.claim,
                res.ok() ? absl::StrCat("HTTP ", res->status, ": ", StatusMessage(res->body))
                         : std::string(res.status().message()));
      continue;
    }
    counters_.Add({.claim_writes = 1});
    if (auto o = DecodeObject(res->body); o.ok() && o->name == step.claim) {
      // What the write made, before its watch echo: a pass meanwhile plans from it (no second
      // status write, no finalizer patch on an old resourceVersion).
      store.Record(*std::move(o));
    }
  }
  return ok;
}

ClaimsInUse ClaimController::InUse() const {
  ClaimsInUse out;
  // USB resources name their node: no other node's claim can need ours.
  for (const auto& [name, st] : usb_states_) {
    if (!st.enabled || !st.enabled->ok || st.disable_asked) continue;
    for (const UsbDevice& u : inventory_->usb) {
      if (UsbObjectName(node_, u) != name) continue;
      out.entries.insert(
          {VendorDeviceIds(u.vendor_id, u.product_id), UsbResourceName(node_, u), true});
    }
  }
  for (const auto& [name, st] : pci_states_) {
    out.pci_claims.insert(name);
    if (!st.enabled || !st.enabled->ok || st.disable_asked) continue;
    for (const PciDevice& d : inventory_->pci) {
      if (d.address.ToString() != st.address) continue;
      out.entries.insert({VendorDeviceIds(d.vendor_id, d.device_id), PciResourceName(d), false});
    }
  }
  return out;
}

}  // namespace pcid::projection
