#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include "projection/controllers.h"
#include "projection/events.h"
#include "projection/kube_client.h"

namespace pcid::projection {
namespace {

std::string Describe(const VgpuAsk& ask) {
  return ask.type ? absl::StrCat("an mdev of type ", *ask.type, " on ", ask.address)
                  : absl::StrCat("no mdev on ", ask.address);
}

// Ready as the owner's answer to `ask` says.
Condition ReadyOf(const VgpuAsk& ask, const VgpuOutcome& answer) {
  if (!answer.ok) return {"Ready", false, answer.reason, answer.message};
  if (ask.type) {
    return {"Ready", true, "Configured",
            absl::StrCat("mdev ", answer.uuid, " of type ", answer.type, " exists")};
  }
  return {"Ready", true, "Disabled", "no vGPU asked"};
}

// The name of type `id` among the function's types; the id itself when it offers it no more.
std::string TypeName(const VgpuOffer& offer, const std::string& id) {
  for (const MdevType& t : offer.types) {
    if (t.id == id) return t.name;
  }
  return id;
}

}  // namespace

VgpuController::VgpuController(std::string node, Store& objects, KubeCaller& api, VgpuHandler owner,
                               std::function<void(Message)> post, const Clock& clock,
                               WallClock wall, Counters& counters, spdlog::logger& log,
                               EventRecorder* events)
    : node_(std::move(node)),
      objects_(objects),
      api_(api),
      owner_(std::move(owner)),
      post_(std::move(post)),
      wall_(std::move(wall)),
      counters_(counters),
      log_(log),
      events_(events),
      retry_(clock, kWriteBackoff) {}

void VgpuController::Handle(const Message& message) {
  std::visit(
      Overloaded{
          [&](const InventoryPublished& m) {
            if (!m.inventory || !m.inventory->mdevs) return;
            inventory_ = m.inventory;
            offers_ = OfferedVgpuObjects(inventory_->pci, *inventory_->mdevs, node_);
          },
          [&](const VgpuAnswered& m) {
            auto it = states_.find(m.name);
            if (it == states_.end() || it->second.ask_id != m.ask || !it->second.in_flight()) {
              return;  // an answer to an ask since replaced
            }
            it->second.answer = m.outcome;
            if (!m.outcome.ok) {
              log_.warn("VGPUDevice {}: refused: {}: {}", m.name, m.outcome.reason,
                        m.outcome.message);
              if (events_) {
                events_->Record(api_, DeviceSubject(objects_, "VGPUDevice", m.name), "Warning",
                                m.outcome.reason, "Configure", m.outcome.message);
              }
            }
          },
          [](const auto&) {},
      },
      message);
}

void VgpuController::Reconcile() {
  if (!inventory_ || !objects_.synced()) return;
  const bool due = retry_.Due();
  if (due) {
    for (auto& [name, st] : states_) {
      if (!st.retry) continue;
      st.retry = false;
      st.again = true;
    }
  }
  away_ = false;
  bool ok = Mirror();
  bool asked = false;
  ok &= Serve(asked);
  retry_.EndPass(ok, asked, due);
}

bool VgpuController::Write(const std::string& name, std::string_view method,
                           const std::string& path, const std::string& body,
                           const std::string& content_type, const ProjectionStats& counted,
                           const char* what) {
  return WriteObject(api_, objects_, counters_, log_, away_, name, method, path, body, content_type,
                     counted, what);
}

bool VgpuController::Mirror() {
  bool ok = true;
  const std::string path = absl::StrCat(kDevicesApiPrefix, kVgpuPlural);
  const Store::Objects objects = objects_.Snapshot();
  for (const auto& [name, offer] : offers_) {
    if (objects.count(name)) continue;  // spec is the user's: an existing object is left as is
    if (Write(name, "POST", path, offer.object_json, "application/json", {.creates = 1},
              "create")) {
      log_.info("vgpudevices {}: created for {}", name, offer.address.ToString());
    } else {
      ok = false;
    }
  }
  for (const auto& [name, o] : objects) {
    if (o.node_label != node_ || o.deleting || offers_.count(name)) continue;
    // An enabled object outlives its function: after a reboot a VF is back only once its PF's VFs
    // are made again, and its recorded mdev is made again then.
    if (auto enabled = o.spec_bools.find("enabled");
        enabled != o.spec_bools.end() && enabled->second) {
      continue;
    }
    const std::string body = DeleteIfUnchanged(o.resource_version);
    if (Write(name, "DELETE", absl::StrCat(path, "/", name), body, "application/json",
              {.deletes = 1}, "delete")) {
      log_.info("vgpudevices {}: deleted (function gone, or no longer an mdev parent)", name);
    } else {
      ok = false;
    }
  }
  return ok;
}

void VgpuController::Ask(const std::string& name, const VgpuAsk& ask, VgpuObjectState& st) {
  st.asked = ask;
  st.ask_id = ++next_ask_;
  st.answer.reset();
  st.retry = st.again = false;
  log_.info("VGPUDevice {}: {}", name, Describe(ask));
  owner_(VgpuRequest{VgpuSource(name), ask.address, ask.type},
         [post = post_, name, id = st.ask_id](VgpuOutcome outcome) {
           post(VgpuAnswered{name, id, std::move(outcome)});
         });
}

bool VgpuController::Serve(bool& asked) {
  const Store::Objects objects = objects_.Snapshot();
  const std::string status_path = absl::StrCat(kDevicesApiPrefix, kVgpuPlural, "/");
  // Our objects with a function offered, and every object we asked something for (a deleted
  // one gives its mdev back).
  std::set<std::string> names;
  for (const auto& [name, o] : objects) {
    if (o.node_label == node_ && !o.deleting && offers_.count(name)) names.insert(name);
  }
  for (const auto& [name, st] : states_) names.insert(name);
  const std::string now = wall_();
  bool ok = true;
  auto write_status = [&](const ObservedObject& o, const VgpuOffer& offer, const VgpuState& state,
                          const Condition& ready) {
    auto patch = VgpuStatusPatch(o, offer, state, ready, now);
    if (!patch) return;
    ok &= Write(o.name, "PATCH", status_path + o.name + "/status", *patch,
                "application/merge-patch+json", {.status_patches = 1}, "status update");
  };
  for (const std::string& name : names) {
    auto obj = objects.find(name);
    const bool exists =
        obj != objects.end() && obj->second.node_label == node_ && !obj->second.deleting;
    auto offer = offers_.find(name);
    VgpuAsk want;
    if (exists && offer == offers_.end()) continue;  // kept while its function is away
    auto st = states_.find(name);
    if (exists) {
      auto ask = AskOfVgpuSpec(obj->second, offer->second, node_);
      if (const auto* refused = std::get_if<VgpuRefusal>(&ask)) {
        // Nothing asked; what was asked before stays in force, and status still shows it.
        VgpuState state;
        if (st != states_.end() && st->second.answer && st->second.answer->ok) {
          state = {st->second.answer->uuid, TypeName(offer->second, st->second.answer->type)};
        }
        write_status(obj->second, offer->second, state,
                     {"Ready", false, refused->reason, refused->message});
        continue;
      }
      want = std::get<VgpuAsk>(ask);
    } else {
      // Deleted (by a user; we delete only disabled objects): give the mdev back, then forget it.
      // Without a finalizer (upstream has none) this is done after the object is gone.
      if (st == states_.end() || st->second.in_flight()) continue;
      if (!st->second.asked || (!st->second.asked->type && st->second.answer->ok)) {
        states_.erase(st);
        continue;
      }
      want = {st->second.asked->address, std::nullopt};
    }
    VgpuObjectState& state = states_[name];
    if (state.in_flight()) continue;  // a spec changed meanwhile is asked when the answer is in
    if (!state.asked || *state.asked != want || state.again) {
      Ask(name, want, state);
      asked = true;
      continue;
    }
    const VgpuOutcome& answer = *state.answer;
    if (exists) {
      write_status(obj->second, offer->second,
                   {answer.uuid, answer.uuid.empty() ? "" : TypeName(offer->second, answer.type)},
                   ReadyOf(want, answer));
    }
    if (!answer.ok && VgpuRetryWorthy(answer.reason)) {
      state.retry = true;  // asked again once the back-off is due
      ok = false;
    }
  }
  return ok;
}

}  // namespace pcid::projection
