// File: core/clock.h
//
// Time for everything that decides "is it due yet": one interface, the steady clock in the
// daemon, a clock the test moves by hand in unit tests. Wall-clock time never decides anything.
#pragma once

#include <absl/base/thread_annotations.h>

#include <chrono>

#include "core/mutex.h"

namespace pcid {

class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using duration = std::chrono::steady_clock::duration;
  virtual ~Clock() = default;
  virtual time_point Now() const = 0;
};

// std::chrono::steady_clock.
class SteadyClock final : public Clock {
 public:
  time_point Now() const override { return std::chrono::steady_clock::now(); }
};

// A clock that stands still until the test advances it. Thread-safe: a test may read it from
// worker threads while advancing it from its own.
class FakeClock final : public Clock {
 public:
  time_point Now() const override {
    MutexLock lock(&mu_);
    return now_;
  }
  void Advance(duration d) {
    MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable Mutex mu_;
  time_point now_ ABSL_GUARDED_BY(mu_) = time_point(std::chrono::hours(1));
};

}  // namespace pcid
