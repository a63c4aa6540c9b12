// File: controller/leader_election.h
//
// Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection: a candidate
// takes the Lease when it does not exist, is released (no holder), or its holder has not renewed
// it for leaseDurationSeconds as this candidate observed it (the record's change seen on the
// local steady clock, never the other host's wall clock); the leader renews every retry period
// and has lost the lease once no renewal succeeded for the renew deadline. Every write carries
// the resourceVersion it was computed from, so of two candidates one wins. Release (SIGTERM)
// empties holderIdentity so a standby takes over at its next retry instead of after the lease
// expires. One thread.
#pragma once

#include <absl/status/status.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "core/clock.h"

namespace spdlog {
class logger;
}
namespace pcid::projection {
class KubeCaller;
class Shutdown;
}  // namespace pcid::projection

namespace pcid::controller {

struct LeaseConfig {
  std::string ns = "pcidevices-system";
  std::string name = "pcidevices-controller";
  std::string identity;  // the pod's name, unique among the candidates
  std::chrono::milliseconds lease_duration{15000};
  std::chrono::milliseconds renew_deadline{10000};
  std::chrono::milliseconds retry_period{2000};
};

// "--leader-elect-*" values that make no sense (renew deadline not below the lease duration,
// retry period not below the renew deadline, an empty identity): InvalidArgument.
absl::Status CheckLeaseConfig(const LeaseConfig& config);

class LeaderElector {
 public:
  // `client` and `clock` outlive the elector; `client` is used on the caller's thread only.
  LeaderElector(LeaseConfig config, projection::KubeCaller& client, const Clock& clock,
                spdlog::logger& log);

  // One attempt to take or renew the Lease; true when this candidate leads afterwards (a failed
  // renewal keeps a leader leading until the renew deadline).
  bool TryAcquireOrRenew();
  // Holds the lease and renewed it within the renew deadline.
  bool leading() const;

  // Gives the Lease up if this candidate holds it. Idempotent.
  absl::Status Release();

  // Campaigns and renews until `shutdown` stops (then releases, returns true) or leadership is
  // lost (returns false: the caller stops the leader's work and exits, as client-go's users do).
  // `on_leading` is called once, on this thread, when the lease is first acquired.
  bool Run(projection::Shutdown& shutdown, const std::function<void()>& on_leading);

 private:
  struct Record {
    std::string holder;
    int64_t duration_seconds = 0;
    std::string acquire_time, renew_time;
    int64_t transitions = 0;
    std::string resource_version;
    friend bool operator==(const Record&, const Record&) = default;
  };
  std::string LeaseJson(const Record& r) const;
  std::string Path() const;

  const LeaseConfig config_;
  projection::KubeCaller& client_;
  const Clock& clock_;
  spdlog::logger& log_;
  std::optional<Record> observed_;   // the Lease as last read or written
  Clock::time_point observed_at_{};  // when observed_ last changed (local clock)
  bool held_ = false;
  Clock::time_point renewed_at_{};  // our last successful write as holder
  bool failing_ = false;            // a failed attempt was logged
};

}  // namespace pcid::controller
