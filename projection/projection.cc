#include "projection/projection.h"

#include <absl/cleanup/cleanup.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "core/naming.h"
#include "core/status.h"
#include "projection/kube_client.h"
#include "projection/kubevirt.h"
#include "projection/mirror.h"

namespace pcid::projection {
namespace {

constexpr char kApiPrefix[] = "/apis/devices.harvesterhci.io/v1beta1/";

using Clock = std::chrono::steady_clock;

// Jittered exponential back-off, 0.5 s to 30 s.
class Backoff {
 public:
  Clock::duration Next() {
    const double base = std::min(30.0, 0.5 * (1 << std::min(failures_++, 6)));
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(base * jitter(rng_)));
  }
  void Reset() { failures_ = 0; }

 private:
  int failures_ = 0;
  std::mt19937 rng_{std::random_device{}()};
};

// True when resourceVersion `a` is known to be older than `b`. Versions are opaque to clients;
// they are compared only when both are plain numbers (etcd revisions, as every server in use
// gives), to drop the watch's echo of a change our own write already returned. Otherwise: false.
bool Older(const std::string& a, const std::string& b) {
  uint64_t x = 0, y = 0;
  return absl::SimpleAtoi(a, &x) && absl::SimpleAtoi(b, &y) && x < y;
}

// What informers (and the device owner's answers to claims) tell the mirror thread.
struct Update {
  std::string plural;
  bool sync = false;  // `list` replaces everything known of `plural`
  std::vector<ObservedObject> list;
  std::string resource_version;  // the list's
  std::string type;              // ADDED / MODIFIED / DELETED
  ObservedObject object;
  // An answer for claim `claim` (plural empty): to its enable or disable.
  std::string claim;
  bool enable = false;
  ClaimOutcome outcome;
  bool usb = false;
};

}  // namespace

struct Projection::Impl {
  KubeConfig config;
  std::string node;
  std::shared_ptr<spdlog::logger> log;
  ClaimHandler claims;

  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;                       // guarded by mu
  std::shared_ptr<const Inventory> inventory;  // guarded by mu; latest published
  std::deque<Update> updates;                  // guarded by mu
  std::vector<KubeClient*> clients;            // guarded by mu: the threads' clients, to Stop()
  ProjectionStats stats;                       // guarded by mu

  std::vector<std::thread> threads;
  bool kubevirt_absent = false;  // the mirror thread's: "no KubeVirt object" said once

  void Post(Update u) {
    {
      std::lock_guard<std::mutex> lock(mu);
      updates.push_back(std::move(u));
    }
    cv.notify_all();
  }

  // Lists a thread's client for the destructor to stop, until the thread's Unlist; false (nothing
  // listed) when already stopping.
  bool Enlist(KubeClient* c) {
    std::lock_guard<std::mutex> lock(mu);
    if (stopping) return false;
    clients.push_back(c);
    return true;
  }
  void Unlist(KubeClient* c) {
    {
      std::lock_guard<std::mutex> lock(mu);
      std::erase(clients, c);
    }
    cv.notify_all();
  }

  // Sleeps up to `d`; false when stopping.
  bool Sleep(Clock::duration d) {
    std::unique_lock<std::mutex> lock(mu);
    return !cv.wait_for(lock, d, [&] { return stopping; });
  }

  // List then watch `plural` (with `selector`, "" = all), for ever: each list is a sync, each
  // event an update.
  void Inform(const std::string& plural, const std::string& selector,
              std::string_view prefix = kApiPrefix) {
    Backoff backoff;
    auto client = KubeClient::Create(config);
    if (!client.ok()) {
      log->error("{}: {}", plural, ToStd(client.status().message()));
      return;
    }
    if (!Enlist(client->get())) return;
    absl::Cleanup unlist = [&] { Unlist(client->get()); };
    const std::string base = absl::StrCat(ToAbsl(prefix), plural, "?", selector);
    bool failing = false;
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stopping) break;
      }
      auto fail = [&](std::string_view why) {
        if (!failing) log->warn("{}: {}; retrying with back-off", plural, why);
        failing = true;
        return Sleep(backoff.Next());
      };
      auto res = (*client)->Call("GET", base);
      if (!res.ok() || res->status != 200) {
        if (!fail(res.ok()
                      ? absl::StrCat("list: HTTP ", res->status, ": ", StatusMessage(res->body))
                      : std::string(res.status().message()))) {
          break;
        }
        continue;
      }
      auto list = DecodeList(res->body);
      if (!list.ok()) {
        if (!fail(absl::StrCat("list: ", list.status().message()))) break;
        continue;
      }
      for (const std::string& why : list->skipped) log->warn("{}: list: skipped {}", plural, why);
      if (failing) log->info("{}: API server reachable again", plural);
      failing = false;
      backoff.Reset();
      std::string rv = list->resource_version;
      Post({plural, true, std::move(list->items), list->resource_version, "", {}, "", false, {}});
      {
        std::lock_guard<std::mutex> lock(mu);
        ++stats.relists;
      }
      // Watch until the stream ends; a cut stream resumes from the last resourceVersion, a 410
      // relists.
      bool gone = false;
      while (!gone) {
        int code = 0;
        bool broken = false;  // an event that does not decode: relisted after a back-off
        auto status = (*client)->Stream(
            absl::StrCat(
                base, "&watch=1&allowWatchBookmarks=true&timeoutSeconds=20&resourceVersion=", rv),
            [&](std::string_view line) {
              auto ev = DecodeWatchEvent(line);
              if (!ev.ok()) {
                log->warn("{}: bad watch event: {}", plural, ToStd(ev.status().message()));
                broken = true;  // resuming would bring the same event back at once
                return false;
              }
              if (ev->type == "ERROR") {
                code = ev->code;
                return false;
              }
              if (!ev->object.resource_version.empty()) rv = ev->object.resource_version;
              if (ev->type != "BOOKMARK") {
                Post({plural, false, {}, "", ev->type, std::move(ev->object), "", false, {}});
              }
              return true;
            });
        {
          std::lock_guard<std::mutex> lock(mu);
          if (stopping) return;
        }
        if (broken) {
          if (!Sleep(backoff.Next())) return;
          gone = true;
        } else if (code == 410 || (status.ok() && *status == 410)) {
          log->info("{}: resourceVersion {} too old (410 Gone): relisting", plural, rv);
          gone = true;
        } else if (!status.ok() || *status / 100 != 2 || code != 0) {
          log->warn("{}: watch ended ({}); relisting after back-off", plural,
                    status.ok()
                        ? absl::StrCat("HTTP ", *status, code ? absl::StrCat(", error ", code) : "")
                        : std::string(status.status().message()));
          if (!Sleep(backoff.Next())) return;
          gone = true;
        }
      }
    }
  }

  // The mirror: applies updates, plans and makes the writes.
  void Mirror() {
    auto client = KubeClient::Create(config);
    if (!client.ok()) {
      log->error("{}", ToStd(client.status().message()));
      return;
    }
    if (!Enlist(client->get())) return;
    absl::Cleanup unlist = [&] { Unlist(client->get()); };
    Observed observed;
    std::map<std::string, ClaimState> claim_states, usb_claim_states;
    bool swept = false;  // claim-enabled devices without a claim given back (once per start)
    std::set<PciHostDevice> kubevirt_applied;  // our claims' entries last made sure of
    std::set<std::string> synced;              // plurals listed at least once
    std::shared_ptr<const Inventory> inv;
    Desired desired;
    Backoff backoff;
    bool retrying = false;  // a device write failed: try again at retry_at (or on news)
    Clock::time_point retry_at;
    bool claims_retrying = false;  // a claim or KubeVirt write failed: plan them again then
    Clock::time_point claims_retry_at;
    Backoff claims_backoff;
    while (true) {
      std::deque<Update> batch;
      {
        std::unique_lock<std::mutex> lock(mu);
        auto ready = [&] { return stopping || !updates.empty() || inventory != inv; };
        if (retrying || claims_retrying) {
          const Clock::time_point max = Clock::time_point::max();
          cv.wait_until(
              lock, std::min(retrying ? retry_at : max, claims_retrying ? claims_retry_at : max),
              ready);
        } else {
          cv.wait(lock, ready);
        }
        if (stopping) return;
        batch.swap(updates);
        if (inventory != inv) {
          inv = inventory;
          desired = DesiredObjects(inv->pci, inv->usb, inv->enabled_usb, node);
        }
      }
      for (Update& u : batch) {
        if (u.plural.empty()) {  // the owner's answer to a claim
          ClaimState& st = (u.usb ? usb_claim_states : claim_states)[u.claim];
          (u.enable ? st.enabled : st.disabled) = u.outcome;
          continue;
        }
        auto& objects = observed[u.plural];
        if (u.sync) {
          // What our own writes returned after the list was taken stays.
          std::map<std::string, ObservedObject> fresh;
          for (auto& [name, o] : objects) {
            if (Older(u.resource_version, o.resource_version)) fresh[name] = std::move(o);
          }
          for (ObservedObject& o : u.list) {
            auto it = fresh.find(o.name);
            if (it == fresh.end() || Older(it->second.resource_version, o.resource_version)) {
              fresh[o.name] = std::move(o);
            }
          }
          objects = std::move(fresh);
          synced.insert(u.plural);
        } else if (auto it = objects.find(u.object.name);
                   it != objects.end() &&
                   Older(u.object.resource_version, it->second.resource_version)) {
          // The echo of a change whose result our write already returned: stale.
        } else if (u.type == "DELETED") {
          objects.erase(u.object.name);
        } else {
          objects[u.object.name] = std::move(u.object);
        }
      }
      bool claims_ok = true;
      if (synced.count(kClaimPlural) && !swept) {
        swept = true;
        ClaimRequest sweep{false, false, "", true, {}};
        for (const auto& [name, c] : observed[kClaimPlural]) {
          auto it = c.spec.find("nodeName");
          if (it != c.spec.end() && it->second == node && c.spec.count("address")) {
            sweep.keep.push_back(c.spec.at("address"));
          }
        }
        claims(std::move(sweep), [](ClaimOutcome) {});
      }
      if (synced.count(kClaimPlural)) {
        claims_ok =
            ServeClaims(**client, kClaimPlural, observed[kClaimPlural], claim_states, ClaimScope{});
      }
      if (inv && synced.count(kUsbClaimPlural)) {
        ClaimScope usb_scope{true, {}};
        for (const UsbDevice& u : inv->usb) {
          if (u.device_class == 0x09) continue;  // hubs are not offered
          usb_scope.usb_devices[UsbObjectName(node, u)] =
              u.host_controller ? u.host_controller->ToString() : "";
        }
        claims_ok &= ServeClaims(**client, kUsbClaimPlural, observed[kUsbClaimPlural],
                                 usb_claim_states, usb_scope);
      }
      if (inv && synced.count(kClaimPlural) && synced.count(kUsbClaimPlural)) {
        // What KubeVirt's object holds; unknown until it is listed (not installed: never).
        std::optional<std::set<std::string>> permitted;
        if (synced.count(kKubeVirtPlural) && !observed[kKubeVirtPlural].empty()) {
          permitted = observed[kKubeVirtPlural].begin()->second.permitted_resources;
        }
        claims_ok &= ServeKubeVirt(**client, *inv, observed[kClaimPlural], claim_states,
                                   usb_claim_states, permitted, kubevirt_applied);
      }
      // Claims are planned on every wake-up; a failed write brings one after a back-off.
      claims_retrying = !claims_ok;
      if (claims_ok) {
        claims_backoff.Reset();
      } else {
        claims_retry_at = Clock::now() + claims_backoff.Next();
      }
      if (!inv || !synced.count(kPciPlural) || !synced.count(kUsbPlural)) continue;
      if (retrying && Clock::now() < retry_at && batch.empty()) continue;
      retrying = false;
      if (!Apply(**client, desired, observed)) {
        retrying = true;
        retry_at = Clock::now() + backoff.Next();
      } else {
        backoff.Reset();
      }
    }
  }

  // Claims: asks the owner, then writes finalizers and status. False when a write failed: the
  // caller plans again after a back-off (or sooner, on the next event).
  bool ServeClaims(KubeClient& client, const char* plural,
                   std::map<std::string, ObservedObject>& claims_seen,
                   std::map<std::string, ClaimState>& states, const ClaimScope& scope) {
    bool ok = true;
    for (const ClaimStep& step : PlanClaims(claims_seen, states, node, scope)) {
      const std::string path = absl::StrCat(kApiPrefix, plural, "/", step.claim);
      absl::StatusOr<KubeResponse> res;
      switch (step.kind) {
        case ClaimStep::Kind::kAskEnable:
        case ClaimStep::Kind::kAskDisable: {
          const bool enable = step.kind == ClaimStep::Kind::kAskEnable;
          log->info("claim {}: {} {}", step.claim, enable ? "enable" : "disable", step.address);
          claims({scope.usb, enable, step.address},
                 [this, name = step.claim, enable, usb = scope.usb](ClaimOutcome outcome) {
                   Post({"", false, {}, "", "", {}, name, enable, std::move(outcome), usb});
                 });
          continue;
        }
        case ClaimStep::Kind::kForget:
          states.erase(step.claim);
          continue;
        case ClaimStep::Kind::kRetryLater:
          ok = false;  // planned again after the claims' back-off
          continue;
        case ClaimStep::Kind::kAddFinalizer:
        case ClaimStep::Kind::kRemoveFinalizer:
          res = client.Call("PATCH", path, step.body, "application/merge-patch+json");
          break;
        case ClaimStep::Kind::kWriteStatus:
          res = client.Call("PATCH", path + "/status", step.body, "application/merge-patch+json");
          break;
      }
      std::lock_guard<std::mutex> lock(mu);
      ++stats.claim_writes;
      if (!res.ok() || res->status / 100 != 2) {
        ++stats.failures;
        ok = false;
        log->warn("claim {}: write failed: {}", step.claim,
                  res.ok() ? absl::StrCat("HTTP ", res->status, ": ", StatusMessage(res->body))
                           : std::string(res.status().message()));
      } else if (auto o = DecodeObject(res->body); o.ok() && o->name == step.claim) {
        // What the write made, before its watch echo: a wake-up meanwhile plans from it
        // (no second status write, no finalizer patch on an old resourceVersion).
        claims_seen[step.claim] = *std::move(o);
      }
    }
    return ok;
  }

  // KubeVirt's permittedHostDevices: an entry for each resource our enabled claims use; entries
  // of resources our released claims used are removed unless a live claim elsewhere in the
  // cluster still uses them. False when the API server should be asked again later.
  bool ServeKubeVirt(KubeClient& client, const Inventory& inv,
                     const std::map<std::string, ObservedObject>& claims_seen,
                     const std::map<std::string, ClaimState>& states,
                     const std::map<std::string, ClaimState>& usb_states,
                     const std::optional<std::set<std::string>>& permitted,
                     std::set<PciHostDevice>& applied) {
    std::set<PciHostDevice> ours;
    // USB resources name their node: no other node's claim can need ours.
    for (const auto& [name, st] : usb_states) {
      if (!st.enabled || !st.enabled->ok || st.disable_asked) continue;
      for (const UsbDevice& u : inv.usb) {
        if (UsbObjectName(node, u) != name) continue;
        ours.insert({VendorDeviceIds(u.vendor_id, u.product_id), UsbResourceName(node, u), true});
      }
    }
    for (const auto& [name, st] : states) {
      if (!st.enabled || !st.enabled->ok || st.disable_asked) continue;
      for (const PciDevice& d : inv.pci) {
        if (d.address.ToString() != st.address) continue;
        ours.insert({VendorDeviceIds(d.vendor_id, d.device_id), PciResourceName(d), false});
      }
    }
    const bool missing = permitted && std::any_of(ours.begin(), ours.end(), [&](const auto& d) {
                           return !permitted->count(d.resource);
                         });
    if (ours == applied && !missing) return true;
    std::set<std::string> remove;
    std::set<std::string> remove_usb;
    for (const PciHostDevice& d : applied) {
      if (!ours.count(d)) (d.usb ? remove_usb : remove).insert(d.resource);
    }
    // Still needed by a live claim of another node? Its device object names the resource.
    for (const auto& [name, c] : claims_seen) {
      if (remove.empty()) break;
      if (c.deleting || states.count(name) || c.status.count("passthroughEnabled") == 0 ||
          c.status.at("passthroughEnabled") != "true") {
        continue;
      }
      auto res = client.Call("GET", absl::StrCat(kApiPrefix, kPciPlural, "/", name));
      if (!res.ok() || (res->status != 200 && res->status != 404)) return false;
      if (res->status != 200) continue;
      if (auto o = DecodeObject(res->body); o.ok() && o->status.count("resourceName")) {
        const std::string& quoted = o->status.at("resourceName");
        remove.erase(quoted.size() >= 2 ? quoted.substr(1, quoted.size() - 2) : quoted);
      }
    }
    remove.insert(remove_usb.begin(), remove_usb.end());
    absl::Status st = UpdatePermittedHostDevices(
        client, std::vector<PciHostDevice>(ours.begin(), ours.end()), remove, 10, *log);
    if (absl::IsNotFound(st)) {
      // Tried again when a KubeVirt object appears (its watch wakes the mirror).
      if (!kubevirt_absent) log->warn("{}", ToStd(st.message()));
      kubevirt_absent = true;
      return true;
    }
    kubevirt_absent = false;
    if (!st.ok()) {
      log->warn("kubevirt: {}", ToStd(st.message()));
      return false;
    }
    applied = std::move(ours);
    return true;
  }

  // Makes the planned writes; false when one failed in a way worth retrying.
  bool Apply(KubeClient& client, const Desired& desired, Observed& observed) {
    bool ok = true;
    for (const Write& w : PlanWrites(desired, observed, node)) {
      const std::string path = absl::StrCat(kApiPrefix, w.plural);
      const DesiredObject* want = nullptr;
      if (w.kind != Write::Kind::kDelete) want = &desired.at(w.plural).at(w.name);
      absl::StatusOr<KubeResponse> res;
      switch (w.kind) {
        case Write::Kind::kCreate:
          res = client.Call("POST", path, want->object_json);
          // The status subresource ignores status on create: it is patched in next.
          if (res.ok() && (res->status == 201 || res->status == 200)) {
            if (auto o = DecodeObject(res->body); o.ok()) observed[w.plural][w.name] = *o;
            res = client.Call("PATCH", absl::StrCat(path, "/", w.name, "/status"),
                              want->status_json, "application/merge-patch+json");
          }
          break;
        case Write::Kind::kPatchStatus:
          res = client.Call("PATCH", absl::StrCat(path, "/", w.name, "/status"), want->status_json,
                            "application/merge-patch+json");
          break;
        case Write::Kind::kDelete:
          res = client.Call("DELETE", absl::StrCat(path, "/", w.name),
                            absl::StrCat("{\"preconditions\":{\"resourceVersion\":\"",
                                         w.resource_version, "\"}}"));
          break;
      }
      std::lock_guard<std::mutex> lock(mu);
      if (res.ok() && res->status / 100 == 2) {
        if (w.kind == Write::Kind::kCreate) ++stats.creates;
        if (w.kind == Write::Kind::kPatchStatus) ++stats.status_patches;
        if (w.kind == Write::Kind::kDelete) {
          ++stats.deletes;
          observed[w.plural].erase(w.name);
        } else if (auto o = DecodeObject(res->body); o.ok()) {
          observed[w.plural][w.name] = *o;  // the watch confirms it too; no second write
        }
        log->info("{} {}: {}", w.plural, w.name,
                  w.kind == Write::Kind::kCreate   ? "created"
                  : w.kind == Write::Kind::kDelete ? "deleted (device gone)"
                                                   : "status updated");
        continue;
      }
      ++stats.failures;
      ok = false;
      log->warn("{} {}: {} failed: {}", w.plural, w.name,
                w.kind == Write::Kind::kCreate   ? "create"
                : w.kind == Write::Kind::kDelete ? "delete"
                                                 : "status update",
                res.ok() ? absl::StrCat("HTTP ", res->status, ": ", StatusMessage(res->body))
                         : std::string(res.status().message()));
      if (!res.ok()) break;  // the server is away: back off instead of failing every write
    }
    return ok;
  }
};

Projection::Projection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Projection>> Projection::Start(const KubeConfig& config,
                                                              std::string node,
                                                              std::shared_ptr<spdlog::logger> log,
                                                              ClaimHandler claims) {
  // Fail early on a config that can never work (bad certificates), not in a thread.
  PCID_RETURN_IF_ERROR(KubeClient::Create(config).status());
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->node = std::move(node);
  impl->log = std::move(log);
  impl->claims = std::move(claims);
  Impl* p = impl.get();
  std::unique_ptr<Projection> projection(new Projection(std::move(impl)));
  p->threads.emplace_back([p] { p->Mirror(); });
  const std::string mine = absl::StrCat("labelSelector=nodename%3D", p->node);
  p->threads.emplace_back([p, mine] { p->Inform(kPciPlural, mine); });
  p->threads.emplace_back([p, mine] { p->Inform(kUsbPlural, mine); });
  // Claims carry their node in spec.nodeName, not in a label: every claim is seen, others' skipped.
  p->threads.emplace_back([p] { p->Inform(kClaimPlural, ""); });
  // USB claims have no node at all: their names say which node's USBDevice they claim.
  p->threads.emplace_back([p] { p->Inform(kUsbClaimPlural, ""); });
  // KubeVirt's object: our entries are checked against what it holds, not against what we last
  // wrote (another node may remove an entry we still need; an administrator may recreate it).
  p->threads.emplace_back([p] { p->Inform(kKubeVirtPlural, "", kKubeVirtPrefix); });
  p->log->info("projection to {} ({}) for node {}", config.host, config.origin, p->node);
  return projection;
}

Projection::~Projection() {
  {
    // A request that was just starting when its client was stopped opens a fresh connection
    // (httplib's stop() only cuts one in flight): stop again until every client is unlisted.
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
    impl_->cv.notify_all();
    while (!impl_->clients.empty()) {
      for (KubeClient* c : impl_->clients) c->Stop();
      impl_->cv.wait_for(lock, std::chrono::milliseconds(50));
    }
  }
  for (std::thread& t : impl_->threads) t.join();
}

void Projection::Publish(std::shared_ptr<const Inventory> inventory) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->inventory = std::move(inventory);
  }
  impl_->cv.notify_all();
}

ProjectionStats Projection::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

}  // namespace pcid::projection
