// File: agent/holder_tracker.h
//
// Who holds which device, in one place: the kubelet's PodResources answers, cached, plus the
// allocations our plugins made that PodResources does not show yet. Decisions that must not take
// a device from a running pod (a release, a disable, enabling another plugin's device) ask for a
// fresh view and are continued when it arrives; health uses the cache, refreshed by a poll that
// runs only while it can change something (the reconciler says when). Never blocks: the calls go
// out through a PodResourcesLister and their answers come back as events. Owner thread only.
#pragma once

#include <absl/status/statusor.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/ports.h"
#include "core/clock.h"

namespace spdlog {
class logger;
}

namespace pcid::agent {

class HolderTracker {
 public:
  using Holders = std::map<std::string, std::string>;  // device ID -> "ns/pod/container"
  using Fresh = std::function<void(const absl::StatusOr<Holders>&)>;

  // While polling, PodResources is asked this often.
  static constexpr std::chrono::seconds kPollInterval{1};
  // An Allocate not yet shown by PodResources counts as held this long (the kubelet records an
  // allocation as soon as the plugin answers, so PodResources shows it well within this).
  static constexpr std::chrono::seconds kPendingAllocation{2};

  HolderTracker(PodResourcesLister& lister, const Clock& clock, spdlog::logger& log);

  // The cached view: PodResources' last answer plus unexpired pending allocations.
  Holders Held() const;
  bool IsHeld(const std::string& id) const;

  // Our plugin answered Allocate for `ids`: held until PodResources names the container.
  void OnAllocated(const std::vector<std::string>& ids);

  // Asks PodResources afresh; `then` gets an answer sent after this call (plus pending
  // allocations), or the error. Askers that come while a call is out share the next one.
  void AskFresh(Fresh then);

  // Polls every kPollInterval while `wanted`.
  void SetPolling(bool wanted);
  std::optional<Clock::time_point> NextWake() const;
  void RunDue();

  // Called after an answer changed the cached view (held devices or expired pendings).
  void set_on_change(std::function<void()> fn) { on_change_ = std::move(fn); }

 private:
  void Send();
  void OnAnswer(absl::StatusOr<plugin::DeviceHolders> answer);
  Holders WithPending(const plugin::DeviceHolders& holders) const;

  PodResourcesLister& lister_;
  const Clock& clock_;
  spdlog::logger& log_;
  plugin::DeviceHolders holders_;  // PodResources' last good answer
  std::map<std::string, std::pair<std::string, Clock::time_point>> pending_;
  uint64_t allocations_ = 0;
  bool in_flight_ = false;
  bool failing_ = false;
  bool polling_ = false;
  std::optional<Clock::time_point> next_poll_;
  std::vector<Fresh> waiting_;  // asked before the call in flight was sent: the next call
  std::vector<Fresh> riding_;   // answered by the call in flight
  std::function<void()> on_change_;
};

}  // namespace pcid::agent
