// File: cmd/daemon_metrics.h
//
// The daemon's metrics (served by cmd/metrics_server.h): the instruments its parts update, and
// the collectors computed when scraped. Names follow Prometheus' conventions; docs/metrics.md
// lists them. Owned by the daemon and handed to its parts as references (no global registry).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "agent/ports.h"
#include "core/metrics.h"
#include "core/mutex.h"
#include "plugin/resources.h"

namespace pcid::projection {
class Projection;
}

namespace pcid::cmd {

struct DaemonMetrics {
  DaemonMetrics();

  metrics::Registry registry;  // first: the references below point into it
  metrics::Family<metrics::DurationHistogram>& loop_handler;  // {handler}
  metrics::Counter& uevents;
  metrics::Counter& kubelet_restarts;
  metrics::Family<metrics::Counter>& registrations;  // {result}
  metrics::DurationHistogram& allocate;
  metrics::Family<metrics::Counter>& allocations;  // {result}
  metrics::DurationHistogram& kernel_jobs;
  metrics::Family<metrics::Counter>& health_changes;  // {resource}
  metrics::Family<metrics::Counter>& api_requests;    // {verb, code}
};

// Counts devices by kind and state from the last published inventory (immutable, so a scrape
// reads it without the owner thread), and hands each inventory on to `next` (the projection,
// once there is one). Publish() runs on the owner thread; the collector on the scraper's.
class InventoryMetrics final : public agent::InventoryPublisher {
 public:
  explicit InventoryMetrics(metrics::Registry& registry);
  void Publish(std::shared_ptr<const projection::Inventory> inventory) override;
  void set_next(agent::InventoryPublisher* next) { next_ = next; }

 private:
  metrics::Samples Collect() const;

  mutable Mutex mu_;
  std::shared_ptr<const projection::Inventory> last_ ABSL_GUARDED_BY(mu_);
  agent::InventoryPublisher* next_ = nullptr;
};

// Counts health changes between what the plugins served and `resources` (owner thread).
class HealthChanges {
 public:
  explicit HealthChanges(metrics::Family<metrics::Counter>& counter) : counter_(counter) {}
  // `changed`: the resources that differ from the last call's (plugin::ResourcePlanner).
  void Observe(const std::map<std::string, plugin::Resource>& resources,
               const std::set<std::string>& changed);

 private:
  metrics::Family<metrics::Counter>& counter_;
  std::map<std::string, std::map<std::string, bool>> healthy_;  // resource -> id -> healthy
};

// The projection's write and watch counters, read from `p` when scraped; `p` must outlive the
// registry's server.
void AddProjectionCollectors(metrics::Registry& registry, const projection::Projection& p);

}  // namespace pcid::cmd
