#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "projection/controllers.h"
#include "projection/kube_client.h"

namespace pcid::projection {

ResourceSliceController::ResourceSliceController(std::string node, Store& slices, KubeCaller& api,
                                                 const Clock& clock, Counters& counters,
                                                 spdlog::logger& log)
    : node_(std::move(node)),
      slices_(slices),
      api_(api),
      counters_(counters),
      log_(log),
      retry_(clock, kWriteBackoff) {}

void ResourceSliceController::Handle(const Message& message) {
  std::visit(Overloaded{
                 [&](const InventoryPublished& m) {
                   if (!m.inventory) return;
                   inventory_ = m.inventory;
                   inventory_changed_ = true;
                 },
                 [&](const StoreListed& m) { dirty_ |= m.plural == slices_.plural(); },
                 [&](const StoreChanged& m) { dirty_ |= m.plural == slices_.plural(); },
                 [](const auto&) {},
             },
             message);
}

void ResourceSliceController::Lay(const Store::Objects& observed) {
  inventory_changed_ = false;
  std::vector<std::pair<std::string, std::string>> before;  // names and hashes
  for (const SliceContent& s : desired_) before.emplace_back(s.name, s.hash);
  std::vector<SliceContent> previous;
  if (laid_out_) {
    previous = std::move(desired_);  // PoolSlices moves unchanged slices back
  } else {
    // After a restart the server's slices are the layout to keep: nothing written if nothing
    // changed meanwhile.
    for (const auto& [name, o] : observed) {
      if (!o.deleting) previous.push_back({name, "", "", o.slice_devices});
    }
  }
  laid_out_ = true;
  const Inventory& inv = *inventory_;
  desired_ =
      PoolSlices(node_, inv.pci, inv.dra_pci, inv.usb, inv.dra_usb, std::move(previous), &objects_);
  // Most inventories change nothing DRA offers (health, other devices).
  dirty_ |= !std::equal(desired_.begin(), desired_.end(), before.begin(), before.end(),
                        [](const SliceContent& a, const std::pair<std::string, std::string>& b) {
                          return a.name == b.first && a.hash == b.second;
                        });
}

namespace {

// The server holds `s` with these devices (its content hash), whatever its generation.
bool Holds(const Store::Objects& observed, const SliceContent& s) {
  auto it = observed.find(s.name);
  if (it == observed.end() || it->second.deleting) return false;
  auto label = it->second.labels.find(kSliceContentLabel);
  return label != it->second.labels.end() && label->second == s.hash;
}

}  // namespace

bool ResourceSliceController::UpToDate(const Store::Objects& observed) const {
  if (observed.size() != desired_.size()) return false;
  std::optional<int64_t> generation;
  for (const SliceContent& s : desired_) {
    if (!Holds(observed, s)) return false;
    auto it = observed.find(s.name);
    if (!it->second.pool_generation) return false;
    if (generation && *generation != *it->second.pool_generation) return false;
    generation = it->second.pool_generation;
  }
  return true;
}

void ResourceSliceController::Reconcile() {
  if (!inventory_ || !slices_.synced()) return;
  // The server's slices matter to the layout only the first time.
  if (inventory_changed_) Lay(laid_out_ ? Store::Objects{} : slices_.Snapshot());
  if (!dirty_ && !retry_.Due()) return;
  dirty_ = false;
  const Store::Objects observed = slices_.Snapshot();
  if (UpToDate(observed)) {
    if (!observed.empty()) generation_ = *observed.begin()->second.pool_generation;
    retry_.Succeeded();
    return;
  }
  // Every change is a new generation for every slice (the API's contract for a pool). The slices
  // whose devices changed are written first: a consumer sees the change with the first write
  // (the highest generation's slices are the pool), the rest follow with the new generation.
  std::vector<const SliceContent*> order, unchanged;
  for (const SliceContent& s : desired_) (Holds(observed, s) ? unchanged : order).push_back(&s);
  const size_t changed = order.size();
  order.insert(order.end(), unchanged.begin(), unchanged.end());
  std::set<std::string> wanted;
  for (const SliceContent& s : desired_) wanted.insert(s.name);
  int64_t highest = generation_;
  for (const auto& [name, o] : observed) highest = std::max(highest, o.pool_generation.value_or(0));
  const int64_t generation = highest + 1;
  const std::string path = absl::StrCat(kResourceApiPrefix, kResourceSlicePlural);
  if (!node_uid_ && !desired_.empty()) {
    // The Node owns the slices, so they go with it; without its uid (no permission, a node
    // not registered yet) they are written without an owner and looked up again next time.
    auto res = api_.Call("GET", absl::StrCat("/api/v1/nodes/", node_));
    if (res.ok() && res->status == 200) {
      if (auto o = DecodeObject(res->body); o.ok()) node_uid_ = o->uid;
    }
  }
  bool ok = true;
  // One write; false when the server is away (a transport failure): the pass ends there.
  auto write = [&](std::string_view method, const std::string& name, const std::string& url,
                   const std::string& body) {
    auto res = api_.Call(method, url, body);
    if (res.ok() && res->status / 100 == 2) {
      counters_.Add({.slice_writes = 1});
      if (method == "DELETE") {
        slices_.Forget(name);
      } else if (auto o = DecodeObject(res->body); o.ok()) {
        slices_.Record(*std::move(o));  // the watch echoes it: no second write
      }
      return true;
    }
    counters_.Add({.failures = 1});
    ok = false;
    log_.warn("resourceslices {}: {} failed: {}", name, method,
              res.ok() ? absl::StrCat("HTTP ", res->status, ": ", StatusMessage(res->body))
                       : std::string(res.status().message()));
    return res.ok();  // a transport failure ends the pass
  };
  // Obsolete slices first: a consumer never sees more devices than the pool has.
  for (const auto& [name, o] : observed) {
    if (wanted.count(name) || o.deleting) continue;
    if (!write("DELETE", name, absl::StrCat(path, "/", name),
               DeleteIfUnchanged(o.resource_version))) {
      break;
    }
  }
  for (const SliceContent* slice : order) {
    if (!ok) break;  // a delete failed: the pool is written once it is clean
    const SliceContent& s = *slice;
    auto it = observed.find(s.name);
    const bool exists = it != observed.end() && !it->second.deleting;
    const std::string body =
        SliceObject(node_, node_uid_.value_or(""), s, generation, desired_.size(),
                    exists ? it->second.resource_version : "");
    if (!write(exists ? "PUT" : "POST", s.name, exists ? absl::StrCat(path, "/", s.name) : path,
               body)) {
      break;
    }
  }
  if (ok) {
    generation_ = generation;
    log_.info("resourceslices: pool {} generation {}: {} slices, {} of them changed", node_,
              generation, desired_.size(), changed);
    retry_.Succeeded();
  } else {
    retry_.Failed();
  }
}

}  // namespace pcid::projection
