#include "projection/store.h"

#include <absl/strings/numbers.h>

namespace pcid::projection {

bool OlderVersion(const std::string& a, const std::string& b) {
  uint64_t x = 0, y = 0;
  return absl::SimpleAtoi(a, &x) && absl::SimpleAtoi(b, &y) && x < y;
}

void Store::Replace(ObservedList list) {
  MutexLock lock(&mu_);
  // What our own writes returned after the list was taken stays.
  Objects fresh;
  for (auto& [name, o] : objects_) {
    if (OlderVersion(list.resource_version, o.resource_version)) fresh[name] = std::move(o);
  }
  for (ObservedObject& o : list.items) {
    std::string key = StoreKey(o);
    auto it = fresh.find(key);
    if (it == fresh.end() || OlderVersion(it->second.resource_version, o.resource_version)) {
      fresh[std::move(key)] = std::move(o);
    }
  }
  objects_ = std::move(fresh);
  resource_version_ = std::move(list.resource_version);
  synced_ = true;
}

bool Store::Apply(WatchEvent event) {
  MutexLock lock(&mu_);
  if (!event.object.resource_version.empty()) resource_version_ = event.object.resource_version;
  if (event.type != "ADDED" && event.type != "MODIFIED" && event.type != "DELETED") return false;
  std::string key = StoreKey(event.object);
  auto it = objects_.find(key);
  if (it != objects_.end() &&
      OlderVersion(event.object.resource_version, it->second.resource_version)) {
    return false;  // the echo of a change whose result our write already returned: stale
  }
  if (event.type == "DELETED") {
    return objects_.erase(key) != 0;
  }
  objects_[std::move(key)] = std::move(event.object);
  return true;
}

void Store::Record(ObservedObject object) {
  MutexLock lock(&mu_);
  std::string key = StoreKey(object);
  auto it = objects_.find(key);
  if (it != objects_.end() && OlderVersion(object.resource_version, it->second.resource_version)) {
    return;  // the watch already brought something newer
  }
  objects_[std::move(key)] = std::move(object);
}

void Store::Forget(const std::string& key) {
  MutexLock lock(&mu_);
  objects_.erase(key);
}

bool Store::synced() const {
  MutexLock lock(&mu_);
  return synced_;
}

std::string Store::resource_version() const {
  MutexLock lock(&mu_);
  return resource_version_;
}

Store::Objects Store::Snapshot() const {
  MutexLock lock(&mu_);
  return objects_;
}

}  // namespace pcid::projection
