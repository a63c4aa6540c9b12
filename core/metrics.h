// File: core/metrics.h
//
// Prometheus instruments and their text exposition (format 0.0.4), for `/metrics`. A Registry
// owns families of counters, gauges and duration histograms, each family one metric name with
// fixed label names and a child per label-value tuple; and collectors, families whose samples
// are computed when scraped (a count of devices by state, from an immutable snapshot).
//
// Threading: instruments are updated lock-free from any thread (the owner loop, gRPC threads,
// kernel jobs); creating a child takes the family's mutex, so hot paths keep the reference
// (children live as long as the registry). Render() may run on any thread.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/mutex.h"

namespace pcid::metrics {

// Label values, in the order of the family's label names.
using LabelValues = std::vector<std::string>;

class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Durations, in seconds, counted into buckets with fixed upper bounds.
class DurationHistogram {
 public:
  explicit DurationHistogram(std::vector<double> bounds_seconds);
  void Observe(std::chrono::nanoseconds d);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum_seconds = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // per bucket, not cumulative; last = +Inf
  std::atomic<uint64_t> sum_ns_{0};
  std::atomic<uint64_t> count_{0};
};

// Bucket bounds for durations from 0.1 ms to 10 s.
std::vector<double> LatencyBuckets();

enum class Type { kCounter, kGauge, kHistogram };

template <typename T>
class Family {
 public:
  template <typename... Args>
  explicit Family(size_t label_count, Args... args)
      : label_count_(label_count), make_([args...] { return std::make_unique<T>(args...); }) {}

  // The child for `values` (as many as the family has label names), made on first use.
  T& With(const LabelValues& values = {}) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    auto& child = children_[values];
    if (!child) child = make_();
    return *child;
  }
  template <typename Fn>
  void ForEach(Fn&& fn) const ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    for (const auto& [values, child] : children_) fn(values, *child);
  }
  size_t label_count() const { return label_count_; }

 private:
  const size_t label_count_;
  std::function<std::unique_ptr<T>()> make_;
  mutable Mutex mu_;
  std::map<LabelValues, std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
};

// Samples of a collector: label values and value.
using Samples = std::vector<std::pair<LabelValues, double>>;

class Registry {
 public:
  // Names follow Prometheus' conventions (`pcidevices_` prefix, `_total` for counters,
  // `_seconds` for durations); each name is registered once. Any thread.
  Family<Counter>& AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {});
  Family<DurationHistogram>& AddHistogram(std::string name, std::string help,
                                          std::vector<std::string> label_names = {},
                                          std::vector<double> bounds = LatencyBuckets());
  // Values computed by `collect` when scraped, on the scraping thread: it must be thread-safe.
  void AddCollector(std::string name, std::string help, Type type,
                    std::vector<std::string> label_names, std::function<Samples()> collect);

  // Everything, in registration order, as the text exposition format.
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    std::string name, help;
    Type type;
    std::vector<std::string> label_names;
    std::unique_ptr<Family<Counter>> counters;
    std::unique_ptr<Family<Gauge>> gauges;
    std::unique_ptr<Family<DurationHistogram>> histograms;
    std::function<Samples()> collect;
  };
  static std::unique_ptr<Entry> NewEntry(std::string name, std::string help, Type type,
                                         std::vector<std::string> labels);
  void Keep(std::unique_ptr<Entry> entry) ABSL_LOCKS_EXCLUDED(mu_);

  mutable Mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
};

// `{a="x",b="y"}` (empty without labels), values escaped as the format asks; `extra` appended
// as one more label (histograms' `le`).
std::string LabelText(const std::vector<std::string>& names, const LabelValues& values,
                      const std::pair<std::string, std::string>* extra = nullptr);

}  // namespace pcid::metrics
