// File: core/event_queue.h
//
// Hands work to the owner thread: any thread Post()s a function; the owner polls fd() and calls
// RunPending(), which runs them in order on the owner thread. Owns an eventfd.
#pragma once

#include <absl/base/thread_annotations.h>

#include <chrono>
#include <deque>
#include <functional>

#include "core/mutex.h"
#include "core/unique_fd.h"

namespace pcid {

class EventQueue {
 public:
  EventQueue();
  void Post(std::function<void()> fn);  // any thread
  int fd() const { return fd_.get(); }  // readable when work is pending
  // Owner thread. Runs what is pending in order, until `budget` has passed: the rest stays
  // queued (fd() stays readable) so that a burst of thousands of answers does not hold the owner
  // loop in one turn while sockets and timers wait.
  void RunPending(std::chrono::nanoseconds budget = std::chrono::nanoseconds::max());

 private:
  UniqueFd fd_;
  Mutex mu_;
  std::deque<std::function<void()>> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pcid
