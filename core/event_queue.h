// File: core/event_queue.h
//
// Hands work to the owner thread: any thread Post()s a function; the owner polls fd() and calls
// RunPending(), which runs them in order on the owner thread. Owns an eventfd.
#pragma once

#include <deque>
#include <functional>
#include <mutex>

#include "core/unique_fd.h"

namespace pcid {

class EventQueue {
 public:
  EventQueue();
  void Post(std::function<void()> fn);  // any thread
  int fd() const { return fd_.get(); }  // readable when work is pending
  void RunPending();                    // owner thread

 private:
  UniqueFd fd_;
  std::mutex mu_;
  std::deque<std::function<void()>> pending_;  // guarded by mu_
};

}  // namespace pcid
