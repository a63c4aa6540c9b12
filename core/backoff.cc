#include "core/backoff.h"

#include <algorithm>
#include <cmath>

namespace pcid {

Backoff::Backoff(Policy policy, uint64_t seed) : policy_(policy), rng_(seed) {
  policy_.jitter = std::clamp(policy_.jitter, 0.0, 1.0);
  policy_.max = std::max(policy_.max, policy_.initial);
}

std::chrono::milliseconds Backoff::Next() {
  // 2^20 times any sensible initial delay is past any sensible max: stop doubling there.
  const double base = std::min(
      static_cast<double>(policy_.max.count()),
      static_cast<double>(policy_.initial.count()) * std::ldexp(1.0, std::min(failures_, 20)));
  ++failures_;
  std::uniform_real_distribution<double> scale(1.0 - policy_.jitter, 1.0 + policy_.jitter);
  const double ms = policy_.jitter > 0 ? base * scale(rng_) : base;
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

}  // namespace pcid
