// File: projection/store.h
//
// One resource's objects as the projection knows them, as a client-go informer's store: key
// (StoreKey: name, or namespace/name) -> object, and the resourceVersion a watch resumes from. The
// informer applies the list and the watch's events; a controller reads it and records the answers
// of its own writes, so that a wake-up before the watch's echo plans from what the write made (no
// second write). An echo older than what is held is dropped, and a relist keeps what our writes
// returned after the list was taken (resourceVersions compared only when both are numbers, as
// etcd's are).
//
// Thread-safe: the informer's thread writes, the controllers' thread reads and records.
#pragma once

#include <absl/base/thread_annotations.h>

#include <map>
#include <string>
#include <utility>

#include "core/mutex.h"
#include "projection/objects.h"

namespace pcid::projection {

// True when resourceVersion `a` is known to be older than `b`. Versions are opaque to clients;
// they are compared only when both are plain numbers. Otherwise: false.
bool OlderVersion(const std::string& a, const std::string& b);

class Store {
 public:
  using Objects = std::map<std::string, ObservedObject>;

  explicit Store(std::string plural) : plural_(std::move(plural)) {}
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& plural() const { return plural_; }

  // A list: replaces every object (but those our writes made after the list was taken) and
  // marks the store synced.
  void Replace(ObservedList list);

  // A watch event: ADDED / MODIFIED store the object, DELETED removes it, BOOKMARK only moves
  // the resourceVersion. True when the objects changed (false for a bookmark and for the stale
  // echo of a change our own write already returned). ERROR events are the informer's; here
  // they change nothing.
  bool Apply(WatchEvent event);

  // Our own write's answer (what the server made); kept unless the store holds something newer.
  void Record(ObservedObject object);
  // Our own deletion succeeded (`key` as StoreKey).
  void Forget(const std::string& key);

  // Listed at least once.
  bool synced() const;
  // Where a watch resumes: the list's or the last event's.
  std::string resource_version() const;

  // Calls `f(const Objects&)` with the store locked and returns what it returns. `f` must
  // not call back into the store.
  template <typename F>
  auto Read(F&& f) const {
    MutexLock lock(&mu_);
    return f(static_cast<const Objects&>(objects_));
  }
  Objects Snapshot() const;

 private:
  const std::string plural_;
  mutable Mutex mu_;
  Objects objects_ ABSL_GUARDED_BY(mu_);
  std::string resource_version_ ABSL_GUARDED_BY(mu_);
  bool synced_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace pcid::projection
