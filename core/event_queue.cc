#include "core/event_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

namespace pcid {

EventQueue::EventQueue() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

void EventQueue::Post(std::function<void()> fn) {
  {
    MutexLock lock(&mu_);
    pending_.push_back(std::move(fn));
  }
  const uint64_t one = 1;
  // A full counter still leaves the fd readable, so a failed write loses nothing.
  (void)!::write(fd_.get(), &one, sizeof one);
}

void EventQueue::RunPending(std::chrono::nanoseconds budget) {
  uint64_t count;
  (void)!::read(fd_.get(), &count, sizeof count);
  std::deque<std::function<void()>> work;
  {
    MutexLock lock(&mu_);
    work.swap(pending_);
  }
  const auto start = std::chrono::steady_clock::now();
  while (!work.empty()) {
    std::function<void()> fn = std::move(work.front());
    work.pop_front();
    fn();
    if (!work.empty() && std::chrono::steady_clock::now() - start >= budget) break;
  }
  if (work.empty()) return;
  {
    // The rest goes back in front of what was posted meanwhile: the order is kept.
    MutexLock lock(&mu_);
    for (auto it = work.rbegin(); it != work.rend(); ++it) pending_.push_front(std::move(*it));
  }
  const uint64_t one = 1;
  (void)!::write(fd_.get(), &one, sizeof one);
}

}  // namespace pcid
