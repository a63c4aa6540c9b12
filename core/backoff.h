// File: core/backoff.h
//
// Jittered exponential back-off, the one used for every retry (plugin registration, watches,
// claim retries, KubeVirt conflicts): the delay doubles from `initial` up to `max`, and each
// delay is scaled by a random factor in [1 - jitter, 1 + jitter] so that many nodes retrying
// the same server spread out. Reset() after a success starts again from `initial`.
// Not thread-safe: each owner keeps its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace pcid {

class Backoff {
 public:
  struct Policy {
    std::chrono::milliseconds initial{100};
    std::chrono::milliseconds max{30000};
    double jitter = 0.25;  // 0 = none; at most 1
  };
  explicit Backoff(Policy policy, uint64_t seed = std::random_device{}());

  // The delay before the next attempt; each call doubles the next one (up to max).
  std::chrono::milliseconds Next();
  void Reset() { failures_ = 0; }
  int failures() const { return failures_; }

 private:
  Policy policy_;
  int failures_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace pcid
