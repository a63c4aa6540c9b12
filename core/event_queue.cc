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

void EventQueue::RunPending() {
  uint64_t count;
  (void)!::read(fd_.get(), &count, sizeof count);
  std::deque<std::function<void()>> work;
  {
    MutexLock lock(&mu_);
    work.swap(pending_);
  }
  for (auto& fn : work) fn();
}

}  // namespace pcid
