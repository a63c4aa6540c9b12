// File: agent/kernel_binder.h
//
// The Binder the daemon uses: each job runs on a worker thread of its own once the jobs before
// it that share a key (an IOMMU group) are done, so a bind the kernel answers slowly, or never,
// holds up only its group while the owner thread goes on. A few workers stay waiting once their
// job is done, so that the next job starts at once (a thread's creation costs a few hundred
// microseconds here, on the path of a DRA prepare). Owns the vfio::Node's view of the node and
// the intent store (shared with the jobs; vfio::StateStore is thread-safe). Stopping (the
// destructor) cancels the waits in running jobs (vfio::Node::cancelled: an enable cut short keeps
// its intent, as after a crash), drops jobs not started, and joins every thread.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <thread>

#include "agent/ports.h"
#include "core/mutex.h"

namespace pcid::agent {

class KernelBinder final : public Binder {
 public:
  // Jobs running at once, at most: each is a thread, mostly asleep waiting for the kernel.
  static constexpr size_t kMaxRunning = 64;
  // Workers kept waiting for the next job (blocked, no timer: an idle node never wakes them).
  static constexpr size_t kIdleWorkers = 2;

  // Told how long each job's kernel work took, on the job's thread (metrics).
  using JobTimer = std::function<void(std::chrono::nanoseconds)>;
  // `node` is copied, its `cancelled` pointed at this binder's stop flag.
  KernelBinder(vfio::Node node, vfio::StateStore store, Post to_owner, JobTimer timed = nullptr);
  ~KernelBinder() override;

  void Submit(std::string what, std::set<std::string> keys, Work work,
              std::function<void()> done) override;
  std::shared_ptr<const std::map<PciAddress, vfio::Intent>> Intents() const override {
    return store_.intents_snapshot();
  }
  std::map<PciAddress, vfio::VfCountIntent> VfCounts() const override { return store_.vf_counts(); }
  std::map<std::string, vfio::MdevIntent> MdevIntents() const override { return store_.mdevs(); }
  std::map<PciAddress, vfio::VgpuTypeIntent> VgpuTypes() const override {
    return store_.vgpu_types();
  }
  std::map<std::string, vfio::UsbRecord> UsbRecords() const override {
    return store_.usb_devices();
  }

  // Jobs started and not finished, jobs waiting for a key, and worker threads alive (for tests
  // and logs).
  size_t running() const;
  size_t waiting() const;
  size_t workers() const;

 private:
  struct Job {
    std::string what;
    std::set<std::string> keys;
    Work work;
    std::function<void()> done;
  };
  // Moves the jobs that may start now from waiting_ to ready_, their keys marked busy.
  void TakeRunnable() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes them, then wakes the idle workers, and the starter when they are too few.
  void Promote() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The starter thread: starts workers and joins ended ones, so that the owner thread's Submit
  // only queues (a start submitting 16 binds held the owner loop 7 ms for their threads).
  void StartWorkers();
  // A worker: runs ready jobs; ends when stopping, or when kIdleWorkers others already wait.
  void RunWorker(uint64_t id);
  void RunJob(Job& job);

  std::atomic<bool> stopping_{false};
  vfio::Node node_;
  vfio::StateStore store_;
  Post to_owner_;
  JobTimer timed_;
  mutable Mutex mu_;
  CondVar wake_;                              // the starter: workers wanted or ended
  CondVar ready_or_stop_;                     // the idle workers
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;  // ... since the starter last looked
  std::deque<Job> waiting_ ABSL_GUARDED_BY(mu_);
  std::deque<Job> ready_ ABSL_GUARDED_BY(mu_);            // keys taken, for the next free worker
  std::multiset<std::string> busy_ ABSL_GUARDED_BY(mu_);  // keys of ready and running jobs
  size_t workers_ ABSL_GUARDED_BY(mu_) = 0;               // alive (or being started)
  size_t executing_ ABSL_GUARDED_BY(mu_) = 0;             // workers inside a job
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;                  // workers waiting for one
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::thread> threads_ ABSL_GUARDED_BY(mu_);  // started, not joined
  std::vector<uint64_t> ended_ ABSL_GUARDED_BY(mu_);              // to join
  std::thread starter_;                                           // last: it uses everything above
};

}  // namespace pcid::agent
