#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <set>

#include "projection/controllers.h"
#include "projection/events.h"
#include "projection/kube_client.h"

namespace pcid::projection {
namespace {

// The PFs the host needs (the default-route interface, slaves of the management bond or
// bridge): never offered. The owner says which (vfio/'s protection, in the inventory).
std::set<PciAddress> ProtectedSriovPfs(const Inventory& inventory) {
  return inventory.protected_sriov_pfs;
}

VfAsker AskerOf(SriovKind kind) {
  return kind == SriovKind::kNetwork ? VfAsker::kSriovNetwork : VfAsker::kSriovGpu;
}

std::string Describe(const CountAsk& ask) {
  return ask.count ? absl::StrCat(*ask.count, " VFs on ", ask.pf_address)
                   : absl::StrCat("give back the VF count of ", ask.pf_address);
}

// Ready as the owner's answer to `ask` says.
Condition ReadyOf(const CountAsk& ask, const VfOutcome& answer, size_t vfs) {
  if (!answer.ok) return {"Ready", false, answer.reason, answer.message};
  if (ask.count) return {"Ready", true, "Applied", absl::StrCat(*ask.count, " VFs asked")};
  // numVFs 0 / enabled=false gives back what this object set: the PF is as it was before, its
  // VFs (another source's, or the kernel's at boot) included.
  return {"Ready", true, "Released",
          absl::StrCat("no VF count asked by this object; the PF has ", vfs, " VFs")};
}

}  // namespace

SriovController::SriovController(std::string node, Store& network, Store& gpu, KubeCaller& api,
                                 SriovHandler owner, std::function<void(Message)> post,
                                 const Clock& clock, WallClock wall, Counters& counters,
                                 spdlog::logger& log, EventRecorder* events)
    : node_(std::move(node)),
      network_(network),
      gpu_(gpu),
      api_(api),
      owner_(std::move(owner)),
      post_(std::move(post)),
      wall_(std::move(wall)),
      counters_(counters),
      log_(log),
      events_(events),
      retry_(clock, kWriteBackoff) {}

void SriovController::Handle(const Message& message) {
  std::visit(
      Overloaded{
          [&](const InventoryPublished& m) {
            if (!m.inventory) return;
            inventory_ = m.inventory;
            protected_ = ProtectedSriovPfs(*inventory_);
            offers_ = OfferedSriovObjects(inventory_->pci, node_, protected_);
            for (const std::string& why : offers_.skipped) {
              if (std::find(skipped_.begin(), skipped_.end(), why) == skipped_.end()) {
                log_.warn("SR-IOV PF {}: no object", why);
              }
            }
            skipped_ = offers_.skipped;
            vgpu_objects_.clear();
            if (inventory_->mdevs) {
              for (auto& entry : OfferedVgpuObjects(inventory_->pci, *inventory_->mdevs, node_)) {
                vgpu_objects_.insert(entry.first);
              }
            }
            // The inventory now says what the PFs have: it is the truth from here on.
            for (auto* states : {&network_states_, &gpu_states_}) {
              for (auto& [name, st] : *states) st.fresh_vfs.reset();
            }
          },
          [&](const VfAnswered& m) {
            if (m.asker == VfAsker::kVfClaim) return;
            auto& states = m.asker == VfAsker::kSriovNetwork ? network_states_ : gpu_states_;
            auto it = states.find(m.name);
            if (it == states.end() || it->second.ask_id != m.ask || !it->second.in_flight()) {
              return;  // an answer to an ask since replaced
            }
            VfCountState& st = it->second;
            st.answer = m.outcome;
            if (m.outcome.ok) {
              st.fresh_vfs = m.outcome.vf_addresses;
            } else {
              const bool network = m.asker == VfAsker::kSriovNetwork;
              const char* kind = network ? "SRIOVNetworkDevice" : "SRIOVGPUDevice";
              log_.warn("{} {}: refused: {}: {}", kind, m.name, m.outcome.reason,
                        m.outcome.message);
              if (events_) {
                events_->Record(api_, DeviceSubject(network ? network_ : gpu_, kind, m.name),
                                "Warning", m.outcome.reason, "SetVFs", m.outcome.message);
              }
            }
          },
          [](const auto&) {},
      },
      message);
}

void SriovController::Reconcile() {
  if (!inventory_ || !network_.synced() || !gpu_.synced()) return;
  const bool due = retry_.Due();
  if (due) {
    for (auto* states : {&network_states_, &gpu_states_}) {
      for (auto& [name, st] : *states) {
        if (!st.retry) continue;
        st.retry = false;
        st.again = true;
      }
    }
  }
  away_ = false;
  current_ = offers_;
  KeepObjectsOfInterfacelessPfs(current_, inventory_->pci, network_.Snapshot(), node_, protected_);
  bool ok = Mirror();
  bool asked = false;
  ok &= Serve(SriovKind::kNetwork, asked);
  ok &= Serve(SriovKind::kGpu, asked);
  retry_.EndPass(ok, asked, due);
}

bool SriovController::Write(Store& store, const std::string& name, std::string_view method,
                            const std::string& path, const std::string& body,
                            const std::string& content_type, const ProjectionStats& counted,
                            const char* what) {
  return WriteObject(api_, store, counters_, log_, away_, name, method, path, body, content_type,
                     counted, what);
}

bool SriovController::Mirror() {
  bool ok = true;
  for (SriovKind kind : {SriovKind::kNetwork, SriovKind::kGpu}) {
    Store& store = StoreOf(kind);
    const std::string path = absl::StrCat(kDevicesApiPrefix, store.plural());
    const auto& offers = current_.of(kind);
    const Store::Objects objects = store.Snapshot();
    for (const auto& [name, offer] : offers) {
      // Spec is the user's: an existing object is left as is.
      if (objects.count(name) || offer.object_json.empty()) continue;
      if (Write(store, name, "POST", path, offer.object_json, "application/json", {.creates = 1},
                "create")) {
        log_.info("{} {}: created for {}", store.plural(), name, offer.pf.ToString());
      } else {
        ok = false;
      }
    }
    for (const auto& [name, o] : objects) {
      if (o.node_label != node_ || o.deleting || offers.count(name)) continue;
      const std::string body = DeleteIfUnchanged(o.resource_version);
      if (Write(store, name, "DELETE", absl::StrCat(path, "/", name), body, "application/json",
                {.deletes = 1}, "delete")) {
        log_.info("{} {}: deleted (PF gone)", store.plural(), name);
      } else {
        ok = false;
      }
    }
  }
  return ok;
}

void SriovController::Ask(SriovKind kind, const std::string& name, const CountAsk& ask,
                          VfCountState& st) {
  st.asked = ask;
  st.ask_id = ++next_ask_;
  st.answer.reset();
  st.retry = st.again = false;
  log_.info("{} {}: {}", SriovPlural(kind), name, Describe(ask));
  owner_(VfCountRequest{SriovSource(kind, name), ask.pf_address, ask.count, ask.drivers_autoprobe},
         [post = post_, asker = AskerOf(kind), name, id = st.ask_id](VfOutcome outcome) {
           post(VfAnswered{asker, name, id, std::move(outcome)});
         });
}

bool SriovController::Serve(SriovKind kind, bool& asked) {
  Store& store = StoreOf(kind);
  auto& states = StatesOf(kind);
  const auto& offers = current_.of(kind);
  const Store::Objects objects = store.Snapshot();
  const std::string status_path = absl::StrCat(kDevicesApiPrefix, store.plural(), "/");
  // Our objects with a PF offered, and every object we asked something for (a deleted one gives
  // its count back).
  std::set<std::string> names;
  for (const auto& [name, o] : objects) {
    if (o.node_label == node_ && !o.deleting && offers.count(name)) names.insert(name);
  }
  for (const auto& [name, st] : states) names.insert(name);
  const std::string now = wall_();
  bool ok = true;
  auto write_status = [&](const ObservedObject& o, const std::vector<std::string>& vfs,
                          const Condition& ready) {
    auto patch = SriovStatusPatch(kind, o, vfs, ready, node_, now, vgpu_objects_);
    if (!patch) return;
    ok &= Write(store, o.name, "PATCH", status_path + o.name + "/status", *patch,
                "application/merge-patch+json", {.status_patches = 1}, "status update");
  };
  for (const std::string& name : names) {
    auto obj = objects.find(name);
    auto offer = offers.find(name);
    const bool live = obj != objects.end() && obj->second.node_label == node_ &&
                      !obj->second.deleting && offer != offers.end();
    CountAsk want;
    if (live) {
      auto ask = AskOfSpec(kind, obj->second, offer->second, node_);
      if (const auto* refused = std::get_if<SpecRefusal>(&ask)) {
        // Nothing asked; what was asked before stays in force.
        auto st = states.find(name);
        write_status(
            obj->second,
            st != states.end() && st->second.fresh_vfs ? *st->second.fresh_vfs : offer->second.vfs,
            {"Ready", false, "InvalidSpec", refused->message});
        continue;
      }
      want = std::get<CountAsk>(ask);
    } else {
      // Deleted (by a user, or by us with its PF): give back what it set, then forget it.
      // Without a finalizer (upstream has none) this is done after the object is gone.
      auto st = states.find(name);
      if (st == states.end() || st->second.in_flight()) continue;
      if (!st->second.asked || (!st->second.asked->count && st->second.answer->ok)) {
        states.erase(st);
        continue;
      }
      want = {st->second.asked->pf_address, std::nullopt, std::nullopt};
    }
    VfCountState& st = states[name];
    if (st.in_flight()) continue;  // a spec changed meanwhile is asked when the answer is in
    if (!st.asked || *st.asked != want || st.again) {
      Ask(kind, name, want, st);
      asked = true;
      continue;
    }
    const VfOutcome& answer = *st.answer;
    if (live) {
      const std::vector<std::string>& vfs = st.fresh_vfs ? *st.fresh_vfs : offer->second.vfs;
      write_status(obj->second, vfs, ReadyOf(want, answer, vfs.size()));
    }
    if (!answer.ok && RetryWorthy(answer.reason)) {
      st.retry = true;  // asked again once the back-off is due
      ok = false;
    }
  }
  return ok;
}

}  // namespace pcid::projection
