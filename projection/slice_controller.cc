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
  std::vector<SliceContent> previous;
  if (laid_out_) {
    previous = desired_;
  } else {
    // After a restart the server's slices are the layout to keep: nothing written if nothing
    // changed meanwhile.
    for (const auto& [name, o] : observed) {
      if (!o.deleting) previous.push_back({name, "", "", o.slice_devices});
    }
  }
  laid_out_ = true;
  const Inventory& inv = *inventory_;
  auto next = PoolSlices(node_, inv.pci, inv.dra_pci, inv.usb, inv.dra_usb, previous);
  // Most inventories change nothing DRA offers (health, other devices).
  auto same = [](const SliceContent& a, const SliceContent& b) {
    return a.name == b.name && a.hash == b.hash;
  };
  if (!std::equal(next.begin(), next.end(), desired_.begin(), desired_.end(), same)) {
    desired_ = std::move(next);
    dirty_ = true;
  }
}

bool ResourceSliceController::UpToDate(const Store::Objects& observed) const {
  if (observed.size() != desired_.size()) return false;
  std::optional<int64_t> generation;
  for (const SliceContent& s : desired_) {
    auto it = observed.find(s.name);
    if (it == observed.end() || it->second.deleting || !it->second.pool_generation) return false;
    auto label = it->second.labels.find(kSliceContentLabel);
    if (label == it->second.labels.end() || label->second != s.hash) return false;
    if (generation && *generation != *it->second.pool_generation) return false;
    generation = it->second.pool_generation;
  }
  return true;
}

void ResourceSliceController::Reconcile() {
  if (!inventory_ || !slices_.synced()) return;
  if (inventory_changed_) Lay(slices_.Snapshot());
  if (!dirty_ && !retry_.Due()) return;
  dirty_ = false;
  const Store::Objects observed = slices_.Snapshot();
  if (UpToDate(observed)) {
    if (!observed.empty()) generation_ = *observed.begin()->second.pool_generation;
    retry_.Succeeded();
    return;
  }
  // One slice to change, none to add or delete, the pool at one generation: that slice alone is
  // written, at that generation (a consumer never sees a pool half old, half new).
  std::set<std::string> changed;
  std::set<int64_t> generations;
  bool added_or_removed = false;
  for (const SliceContent& s : desired_) {
    auto it = observed.find(s.name);
    if (it == observed.end() || it->second.deleting || !it->second.pool_generation) {
      added_or_removed = true;
      continue;
    }
    generations.insert(*it->second.pool_generation);
    auto label = it->second.labels.find(kSliceContentLabel);
    if (label == it->second.labels.end() || label->second != s.hash) changed.insert(s.name);
  }
  std::set<std::string> wanted;
  for (const SliceContent& s : desired_) wanted.insert(s.name);
  for (const auto& [name, o] : observed) added_or_removed |= !o.deleting && !wanted.count(name);
  const bool in_place = !added_or_removed && generations.size() == 1 && changed.size() <= 1;
  int64_t highest = generation_;
  for (const auto& [name, o] : observed) highest = std::max(highest, o.pool_generation.value_or(0));
  const int64_t generation = in_place ? *generations.begin() : highest + 1;
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
  for (const SliceContent& s : desired_) {
    if (!ok) break;  // a delete failed: the pool is written once it is clean
    if (in_place && !changed.count(s.name)) continue;
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
    log_.info("resourceslices: pool {} generation {}: {} slices, {} written", node_, generation,
              desired_.size(), in_place ? changed.size() : desired_.size());
    retry_.Succeeded();
  } else {
    retry_.Failed();
  }
}

}  // namespace pcid::projection
