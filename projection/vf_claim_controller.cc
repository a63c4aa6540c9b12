#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <set>

#include "core/naming.h"
#include "projection/claims.h"
#include "projection/controllers.h"
#include "projection/events.h"
#include "projection/kube_client.h"

namespace pcid::projection {
namespace {

std::string Describe(const VfClaimAsk& ask) {
  if (ask.release) return "give its VFs back";
  const VfClaimSpec& s = ask.spec;
  return s.pf_address.empty()
             ? absl::StrCat(s.count, " VFs of a ", s.vendor_id, ":", s.device_id, " PF")
             : absl::StrCat(s.count, " VFs of ", s.pf_address);
}

}  // namespace

VfClaimController::VfClaimController(std::string node, Store& claims, Store& network,
                                     KubeCaller& api, SriovHandler owner,
                                     std::function<void(Message)> post, const Clock& clock,
                                     WallClock wall, Counters& counters, spdlog::logger& log,
                                     EventRecorder* events)
    : node_(std::move(node)),
      claims_(claims),
      network_(network),
      api_(api),
      owner_(std::move(owner)),
      post_(std::move(post)),
      wall_(std::move(wall)),
      counters_(counters),
      log_(log),
      events_(events),
      retry_(clock, kWriteBackoff) {}

void VfClaimController::Handle(const Message& message) {
  if (const auto* p = std::get_if<InventoryPublished>(&message)) {
    inventory_ = p->inventory;
    return;
  }
  const auto* m = std::get_if<VfAnswered>(&message);
  if (m == nullptr || m->asker != VfAsker::kVfClaim) return;
  auto it = states_.find(m->name);
  if (it == states_.end() || it->second.ask_id != m->ask || !it->second.in_flight()) return;
  VfClaimState& st = it->second;
  st.answer = m->outcome;
  if (!m->outcome.ok) {
    log_.warn("vfclaim {}: refused: {}: {}", m->name, m->outcome.reason, m->outcome.message);
    if (events_) {
      events_->Record(api_, DeviceSubject(claims_, "VFClaim", m->name), "Warning",
                      m->outcome.reason, st.asked && st.asked->release ? "Release" : "Claim",
                      m->outcome.message);
    }
  }
  if (st.asked->release) {
    if (m->outcome.ok) st.held.reset();
  } else if (m->outcome.ok || !m->outcome.vf_addresses.empty()) {
    // A refusal that names VFs (some bound, one failed) says what the claim holds now; one that
    // names none leaves what it held before.
    st.held = m->outcome;
    st.held_spec = st.asked->spec;
  }
}

void VfClaimController::Ask(const std::string& name, const VfClaimAsk& ask, VfClaimState& st) {
  st.asked = ask;
  st.ask_id = ++next_ask_;
  st.answer.reset();
  st.retry = st.again = false;
  log_.info("vfclaim {}: {}", name, Describe(ask));
  owner_(
      VfClaimRequestOf(name, ask.spec, ask.release, ask.release ? decltype(max_vfs_){} : max_vfs_),
      [post = post_, name, id = st.ask_id](VfOutcome outcome) {
        post(VfAnswered{VfAsker::kVfClaim, name, id, std::move(outcome)});
      });
}

bool VfClaimController::Write(const std::string& name, const std::string& path,
                              const std::string& body) {
  if (away_) return false;
  absl::StatusOr<KubeResponse> res = api_.Call("PATCH", path, body, "application/merge-patch+json");
  if (!res.ok() || res->status / 100 != 2) {
    away_ = !res.ok();  // the server is away: back off instead of failing every write
    counters_.Add({.failures = 1, .claim_writes = 1});
    log_.warn("vfclaim {}: write failed: {}", name,
              res.ok() ? absl::StrCat("HTTP ", res->status, ": ", StatusMessage(res->body))
                       : std::string(res.status().message()));
    return false;
  }
  counters_.Add({.claim_writes = 1});
  if (auto o = DecodeObject(res->body); o.ok() && o->name == name) {
    claims_.Record(*std::move(o));  // what the write made, before its watch echo
  }
  return true;
}

VfClaimsInUse VfClaimController::InUse() const {
  VfClaimsInUse out;
  claims_.Read([&](const Store::Objects& claims) {
    for (const auto& [name, c] : claims) {
      if (VfClaimNode(c) == node_) out.vf_claims.insert(name);
    }
  });
  for (const auto& [name, st] : states_) {
    out.vf_claims.insert(name);
    // VFs held until given back: a VM may use them until then.
    if (!st.held) continue;
    for (const std::string& vf : st.held->vf_addresses) {
      for (const PciDevice& d : inventory_->pci) {
        if (d.address.ToString() != vf) continue;
        out.entries.insert({VendorDeviceIds(d.vendor_id, d.device_id), PciResourceName(d), false});
      }
    }
  }
  return out;
}

std::optional<VfClaimsInUse> VfClaimController::Reconcile() {
  if (!claims_.synced() || !network_.synced()) return std::nullopt;
  const bool due = retry_.Due();
  if (due) {
    for (auto& [name, st] : states_) {
      if (!st.retry) continue;
      st.retry = false;
      st.again = true;
    }
  }
  away_ = false;
  max_vfs_ = MaxVfsOf(network_.Snapshot(), node_);
  const Store::Objects claims = claims_.Snapshot();
  std::set<std::string> names;
  for (const auto& [name, c] : claims) {
    if (VfClaimNode(c) == node_) names.insert(name);
  }
  if (!swept_) {
    // VFs held for claims that no longer exist (force-deleted while the agent was down) are
    // given back: once, from the first complete list.
    swept_ = true;
    owner_(VfClaimSweep{{names.begin(), names.end()}}, [](VfOutcome) {});
  }
  for (const auto& [name, st] : states_) names.insert(name);
  const std::string base = absl::StrCat(kDevicesApiPrefix, claims_.plural(), "/");
  const std::string now = wall_();
  bool ok = true;
  bool asked = false;
  auto write_status = [&](const ObservedObject& c, const VfOutcome* vfs, const Condition& ready) {
    auto patch = VfClaimStatusPatch(c, vfs ? vfs->vf_addresses : std::vector<std::string>{},
                                    vfs ? vfs->resource_name : "", ready, node_, now);
    if (patch) ok &= Write(c.name, base + c.name + "/status", *patch);
  };
  // Asks `want` unless it is what was last asked; true when it asked (the answer brings the
  // next step).
  auto ask = [&](const std::string& name, const VfClaimAsk& want, VfClaimState& st) {
    if (st.asked && *st.asked == want && !st.again) return false;
    Ask(name, want, st);
    asked = true;
    return true;
  };
  auto retry_if_worth = [&](VfClaimState& st) {
    if (st.answer->ok || !RetryWorthy(st.answer->reason)) return;
    st.retry = true;  // asked again once the back-off is due
    ok = false;
  };
  for (const std::string& name : names) {
    auto it = claims.find(name);
    const ObservedObject* c =
        it != claims.end() && VfClaimNode(it->second) == node_ ? &it->second : nullptr;
    auto st_it = states_.find(name);
    if (c == nullptr || (c->deleting && !HasFinalizer(*c))) {
      // Gone without our finalizer's turn (force-deleted, moved to another node): what it holds
      // is given back all the same.
      if (st_it == states_.end() || st_it->second.in_flight()) continue;
      VfClaimState& st = st_it->second;
      if (!st.held) {
        states_.erase(st_it);
        continue;
      }
      if (!ask(name, {st.held_spec, true}, st)) retry_if_worth(st);
      continue;
    }
    const auto checked = CheckVfClaimSpec(*c);
    if (c->deleting) {
      VfClaimState& st = states_[name];
      if (st.in_flight()) continue;
      // Unknown to this run (deleted while the agent was down) is given back too: the owner
      // answers ok when it holds nothing for the claim.
      const VfClaimSpec spec = st.held    ? st.held_spec
                               : st.asked ? st.asked->spec
                               : std::holds_alternative<VfClaimSpec>(checked)
                                   ? std::get<VfClaimSpec>(checked)
                                   : VfClaimSpec{};
      if (ask(name, {spec, true}, st)) continue;
      if (st.answer->ok) {
        if (Write(name, base + name, FinalizersPatch(*c, false))) {
          states_.erase(name);
        } else {
          ok = false;
        }
        continue;
      }
      // Refused (a pod holds a VF): the VFs stay the claim's, and the condition says why its
      // deletion waits.
      write_status(*c, st.held ? &*st.held : nullptr,
                   {"Ready", st.held.has_value(), st.answer->reason,
                    absl::StrCat("deletion waits: ", st.answer->message)});
      retry_if_worth(st);
      continue;
    }
    if (const auto* refused = std::get_if<SpecRefusal>(&checked)) {
      // Nothing asked; VFs it already holds stay its own until the spec is valid or it goes.
      const VfOutcome* held =
          st_it != states_.end() && st_it->second.held ? &*st_it->second.held : nullptr;
      write_status(*c, held, {"Ready", false, "InvalidSpec", refused->message});
      continue;
    }
    const VfClaimSpec& spec = std::get<VfClaimSpec>(checked);
    if (!HasFinalizer(*c)) {
      // Before the owner is asked anything: a deletion then waits for the VFs to be given back.
      ok &= Write(name, base + name, FinalizersPatch(*c, true));
      continue;  // its answer (or watch event) brings the claim back here
    }
    VfClaimState& st = states_[name];
    if (st.in_flight()) continue;  // a spec changed meanwhile is asked when the answer is in
    // A changed spec gives back the VFs it holds first, then is asked afresh (as a
    // PCIDeviceClaim whose address is edited). A count raised for the same PF (or IDs) is asked
    // at once: the owner keeps the VFs a claim holds and adds the missing ones, so a VM using
    // them keeps them.
    const bool grows = st.held && st.held_spec.pf_address == spec.pf_address &&
                       st.held_spec.vendor_id == spec.vendor_id &&
                       st.held_spec.device_id == spec.device_id && st.held_spec.count < spec.count;
    const bool changed = st.held && st.held_spec != spec && !grows;
    if (ask(name, changed ? VfClaimAsk{st.held_spec, true} : VfClaimAsk{spec, false}, st)) {
      continue;
    }
    const VfOutcome& answer = *st.answer;
    if (changed) {
      // The give-back was refused: the old VFs stay, and the condition says why.
      write_status(
          *c, &*st.held,
          {"Ready", true, answer.reason, absl::StrCat("spec change waits: ", answer.message)});
    } else if (answer.ok) {
      write_status(*c, &answer,
                   {"Ready", true, "Bound",
                    absl::StrCat(answer.vf_addresses.size(), " VFs bound to vfio-pci, served as ",
                                 answer.resource_name)});
    } else {
      // What it holds stays listed (a raised count refused keeps the VFs it had).
      write_status(*c, st.held ? &*st.held : nullptr,
                   {"Ready", false, answer.reason, answer.message});
    }
    retry_if_worth(st);
  }
  retry_.EndPass(ok, asked, due);
  if (!inventory_) return std::nullopt;
  return InUse();
}

}  // namespace pcid::projection
