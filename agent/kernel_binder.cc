#include "agent/kernel_binder.h"

#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

namespace pcid::agent {

std::string BindKey(const PciDevice& dev) {
  return dev.iommu_group ? absl::StrCat("group:", *dev.iommu_group)
                         : absl::StrCat("pci:", dev.address.ToString());
}

KernelBinder::KernelBinder(vfio::Node node, vfio::StateStore store, Post to_owner, JobTimer timed)
    : node_(std::move(node)),
      store_(std::move(store)),
      to_owner_(std::move(to_owner)),
      timed_(std::move(timed)) {
  node_.cancelled = &stopping_;
}

KernelBinder::~KernelBinder() {
  stopping_ = true;
  std::list<std::thread> threads;
  std::vector<std::thread> finished;
  {
    MutexLock lock(&mu_);
    if (!waiting_.empty()) {
      node_.log.info("stopping: {} kernel jobs not started (their intents, if any, stay)",
                     waiting_.size());
    }
    waiting_.clear();
    threads = std::move(threads_);
    finished = std::move(finished_);
  }
  for (std::thread& t : threads) t.join();
  for (std::thread& t : finished) t.join();
}

void KernelBinder::Submit(std::string what, std::set<std::string> keys, Work work,
                          std::function<void()> done) {
  MutexLock lock(&mu_);
  for (std::thread& t : finished_) t.join();  // threads that ended since the last submit
  finished_.clear();
  if (stopping_) return;
  waiting_.push_back({std::move(what), std::move(keys), std::move(work), std::move(done)});
  StartRunnable();
}

// In submission order: a job starts when no running job and no earlier waiting job holds one of
// its keys (an earlier job never waits behind a later one).
void KernelBinder::StartRunnable() {
  std::set<std::string> claimed(busy_.begin(), busy_.end());
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    bool free = true;
    for (const std::string& k : it->keys) free = free && !claimed.count(k);
    claimed.insert(it->keys.begin(), it->keys.end());
    if (running_ >= kMaxRunning) break;
    if (!free || stopping_) {
      ++it;
      continue;
    }
    for (const std::string& k : it->keys) busy_.insert(k);
    ++running_;
    Job job = std::move(*it);
    it = waiting_.erase(it);
    threads_.emplace_front();
    auto self = threads_.begin();
    *self =
        std::thread([this, job = std::move(job), self]() mutable { Run(std::move(job), self); });
  }
}

void KernelBinder::Run(Job job, std::list<std::thread>::iterator self) {
  node_.log.debug("kernel job started: {}", job.what);
  const auto t0 = std::chrono::steady_clock::now();
  job.work(node_, store_, to_owner_);
  if (timed_) timed_(std::chrono::steady_clock::now() - t0);
  if (job.done) to_owner_(std::move(job.done));
  MutexLock lock(&mu_);
  for (const std::string& k : job.keys) busy_.erase(busy_.find(k));
  --running_;
  if (!stopping_) {
    // This thread cannot join itself: the next Submit (or the destructor) does.
    finished_.push_back(std::move(*self));
    threads_.erase(self);
    StartRunnable();
  }
}

size_t KernelBinder::running() const {
  MutexLock lock(&mu_);
  return running_;
}

size_t KernelBinder::waiting() const {
  MutexLock lock(&mu_);
  return waiting_.size();
}

}  // namespace pcid::agent
