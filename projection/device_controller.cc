#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include "projection/controllers.h"
#include "projection/kube_client.h"

namespace pcid::projection {
namespace {

const char* Verb(Write::Kind kind) {
  switch (kind) {
    case Write::Kind::kCreate:
      return "create";
    case Write::Kind::kPatchStatus:
      return "status update";
    case Write::Kind::kDelete:
      return "delete";
  }
  return "write";
}

const char* Done(Write::Kind kind) {
  switch (kind) {
    case Write::Kind::kCreate:
      return "created";
    case Write::Kind::kPatchStatus:
      return "status updated";
    case Write::Kind::kDelete:
      return "deleted (device gone)";
  }
  return "written";
}

std::string Failure(const absl::StatusOr<KubeResponse>& res) {
  return res.ok() ? absl::StrCat("HTTP ", res->status, ": ", StatusMessage(res->body))
                  : std::string(res.status().message());
}

}  // namespace

DeviceController::DeviceController(std::string node, Store& pci, Store& usb, KubeCaller& api,
                                   const Clock& clock, Counters& counters, spdlog::logger& log)
    : node_(std::move(node)),
      pci_(pci),
      usb_(usb),
      api_(api),
      counters_(counters),
      log_(log),
      retry_(clock, kWriteBackoff) {}

void DeviceController::Handle(const Message& message) {
  std::visit(Overloaded{
                 [&](const InventoryPublished& m) {
                   if (!m.inventory) return;
                   inventory_ = m.inventory;
                   desired_ = DesiredObjects(inventory_->pci, inventory_->usb,
                                             inventory_->enabled_usb, node_);
                   dirty_ = true;
                 },
                 [&](const StoreListed& m) {
                   dirty_ |= m.plural == pci_.plural() || m.plural == usb_.plural();
                 },
                 [&](const StoreChanged& m) {
                   dirty_ |= m.plural == pci_.plural() || m.plural == usb_.plural();
                 },
                 [](const auto&) {},
             },
             message);
}

void DeviceController::Reconcile() {
  if (!inventory_ || !pci_.synced() || !usb_.synced()) return;
  if (!dirty_ && !retry_.Due()) return;
  dirty_ = false;
  Observed observed;
  observed[pci_.plural()] = pci_.Snapshot();
  observed[usb_.plural()] = usb_.Snapshot();
  bool ok = true;
  for (const Write& w : PlanWrites(desired_, observed, node_)) {
    Store& store = w.plural == pci_.plural() ? pci_ : usb_;
    const std::string path = absl::StrCat(kDevicesApiPrefix, w.plural);
    const DesiredObject* want =
        w.kind == Write::Kind::kDelete ? nullptr : &desired_.at(w.plural).at(w.name);
    absl::StatusOr<KubeResponse> res;
    switch (w.kind) {
      case Write::Kind::kCreate:
        res = api_.Call("POST", path, want->object_json);
        // The status subresource ignores status on create: it is patched in next.
        if (res.ok() && (res->status == 201 || res->status == 200)) {
          if (auto o = DecodeObject(res->body); o.ok()) store.Record(*std::move(o));
          res = api_.Call("PATCH", absl::StrCat(path, "/", w.name, "/status"), want->status_json,
                          "application/merge-patch+json");
        }
        break;
      case Write::Kind::kPatchStatus:
        res = api_.Call("PATCH", absl::StrCat(path, "/", w.name, "/status"),
                        StatusPatchBody(*want, w.drop), "application/merge-patch+json");
        break;
      case Write::Kind::kDelete: {
        const std::string body = DeleteIfUnchanged(w.resource_version);
        res = api_.Call("DELETE", absl::StrCat(path, "/", w.name), body);
        break;
      }
    }
    if (res.ok() && res->status / 100 == 2) {
      ProjectionStats delta;
      if (w.kind == Write::Kind::kCreate) delta.creates = 1;
      if (w.kind == Write::Kind::kPatchStatus) delta.status_patches = 1;
      if (w.kind == Write::Kind::kDelete) {
        delta.deletes = 1;
        store.Forget(w.name);
      } else if (auto o = DecodeObject(res->body); o.ok()) {
        store.Record(*std::move(o));  // the watch confirms it too; no second write
      }
      counters_.Add(delta);
      log_.info("{} {}: {}", w.plural, w.name, Done(w.kind));
      continue;
    }
    counters_.Add({.failures = 1});
    ok = false;
    log_.warn("{} {}: {} failed: {}", w.plural, w.name, Verb(w.kind), Failure(res));
    if (!res.ok()) break;  // the server is away: back off instead of failing every write
  }
  if (ok) {
    retry_.Succeeded();
  } else {
    retry_.Failed();
  }
}

}  // namespace pcid::projection
