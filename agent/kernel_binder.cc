#include "agent/kernel_binder.h"

#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <optional>

namespace pcid::agent {

std::string BindKey(const PciDevice& dev) {
  return dev.iommu_group ? absl::StrCat("group:", *dev.iommu_group)
                         : absl::StrCat("pci:", dev.address.ToString());
}

KernelBinder::KernelBinder(vfio::Node node, vfio::StateStore store, Post to_owner, JobTimer timed)
    : node_(std::move(node)),
      store_(std::move(store)),
      to_owner_(std::move(to_owner)),
      timed_(std::move(timed)),
      starter_([this] { StartWorkers(); }) {
  node_.cancelled = &stopping_;
}

KernelBinder::~KernelBinder() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    if (const size_t left = waiting_.size() + ready_.size(); left > 0) {
      node_.log.info("stopping: {} kernel jobs not started (their intents, if any, stay)", left);
    }
    waiting_.clear();
    ready_.clear();
    wake_.SignalAll();
    ready_or_stop_.SignalAll();
  }
  starter_.join();
  // No worker starts now: join them all (their waits are cancelled, the idle ones end).
  std::map<uint64_t, std::thread> threads;
  {
    MutexLock lock(&mu_);
    threads = std::move(threads_);
  }
  for (auto& [id, t] : threads) t.join();
}

void KernelBinder::Submit(std::string what, std::set<std::string> keys, Work work,
                          std::function<void()> done) {
  MutexLock lock(&mu_);
  if (stopping_) return;
  waiting_.push_back({std::move(what), std::move(keys), std::move(work), std::move(done)});
  Promote();
}

// In submission order: a job starts when no running job and no earlier waiting job holds one of
// its keys (an earlier job never waits behind a later one).
void KernelBinder::TakeRunnable() {
  std::set<std::string> claimed(busy_.begin(), busy_.end());
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    bool free = true;
    for (const std::string& k : it->keys) free = free && !claimed.count(k);
    claimed.insert(it->keys.begin(), it->keys.end());
    if (ready_.size() + executing_ >= kMaxRunning) break;
    if (!free) {
      ++it;
      continue;
    }
    for (const std::string& k : it->keys) busy_.insert(k);
    ready_.push_back(std::move(*it));
    it = waiting_.erase(it);
  }
}

void KernelBinder::Promote() {
  TakeRunnable();
  if (ready_.empty()) return;
  if (idle_ > 0) ready_or_stop_.SignalAll();
  // Workers neither inside a job nor waiting are being started: they take ready jobs too.
  if (ready_.size() > workers_ - executing_) {
    kicked_ = true;
    wake_.Signal();
  }
}

void KernelBinder::StartWorkers() {
  for (;;) {
    std::vector<uint64_t> start;
    std::vector<std::thread> ended;
    {
      MutexLock lock(&mu_);
      while (!kicked_ && !stopping_) wake_.Wait(&mu_);
      if (stopping_) return;
      kicked_ = false;
      for (uint64_t id : ended_) {
        // Every id here was started by this thread, which stored its handle first.
        ended.push_back(std::move(threads_.at(id)));
        threads_.erase(id);
      }
      ended_.clear();
      while (ready_.size() > workers_ - executing_) {
        ++workers_;
        start.push_back(next_id_++);
      }
    }
    for (std::thread& t : ended) t.join();
    for (uint64_t id : start) {
      std::thread t([this, id] { RunWorker(id); });
      MutexLock lock(&mu_);
      threads_.emplace(id, std::move(t));
    }
  }
}

void KernelBinder::RunWorker(uint64_t id) {
  for (;;) {
    std::optional<Job> job;
    {
      MutexLock lock(&mu_);
      while (ready_.empty() && !stopping_ && idle_ < kIdleWorkers) {
        ++idle_;
        ready_or_stop_.Wait(&mu_);
        --idle_;
      }
      if (stopping_ || ready_.empty()) {
        --workers_;
        ended_.push_back(id);  // a thread cannot join itself: the starter does
        kicked_ = true;
        wake_.Signal();
        return;
      }
      job = std::move(ready_.front());
      ready_.pop_front();
      ++executing_;
    }
    RunJob(*job);
    MutexLock lock(&mu_);
    for (const std::string& k : job->keys) busy_.erase(busy_.find(k));
    --executing_;
    Promote();  // jobs waiting for its keys may start
  }
}

void KernelBinder::RunJob(Job& job) {
  node_.log.debug("kernel job started: {}", job.what);
  const auto t0 = std::chrono::steady_clock::now();
  job.work(node_, store_, to_owner_);
  if (timed_) timed_(std::chrono::steady_clock::now() - t0);
  if (job.done) to_owner_(std::move(job.done));
}

size_t KernelBinder::running() const {
  MutexLock lock(&mu_);
  return ready_.size() + executing_;
}

size_t KernelBinder::waiting() const {
  MutexLock lock(&mu_);
  return waiting_.size();
}

size_t KernelBinder::workers() const {
  MutexLock lock(&mu_);
  return workers_;
}

}  // namespace pcid::agent
