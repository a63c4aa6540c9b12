#include "agent/holder_tracker.h"

#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include "core/status.h"

namespace pcid::agent {

HolderTracker::HolderTracker(PodResourcesLister& lister, const Clock& clock, spdlog::logger& log)
    : lister_(lister), clock_(clock), log_(log) {}

HolderTracker::Holders HolderTracker::WithPending(const plugin::DeviceHolders& holders) const {
  Holders out = holders;
  const auto now = clock_.Now();
  for (const auto& [id, p] : pending_) {
    if (now - p.second < kPendingAllocation) out.emplace(id, p.first);
  }
  return out;
}

HolderTracker::Holders HolderTracker::Held() const { return WithPending(holders_); }

bool HolderTracker::IsHeld(const std::string& id) const {
  if (holders_.count(id)) return true;
  auto it = pending_.find(id);
  return it != pending_.end() && clock_.Now() - it->second.second < kPendingAllocation;
}

void HolderTracker::OnAllocated(const std::vector<std::string>& ids) {
  const std::string holder = absl::StrCat("allocation #", ++allocations_);
  for (const std::string& id : ids) pending_[id] = {holder, clock_.Now()};
}

void HolderTracker::AskFresh(Fresh then) {
  waiting_.push_back(std::move(then));
  if (!in_flight_) Send();
}

void HolderTracker::SetPolling(bool wanted) {
  polling_ = wanted;
  if (!polling_) {
    next_poll_.reset();
  } else if (!next_poll_ && !in_flight_) {
    next_poll_ = clock_.Now() + kPollInterval;
  }
}

std::optional<Clock::time_point> HolderTracker::NextWake() const { return next_poll_; }

void HolderTracker::RunDue() {
  if (next_poll_ && *next_poll_ <= clock_.Now() && !in_flight_) Send();
}

void HolderTracker::Send() {
  next_poll_.reset();
  in_flight_ = true;
  riding_ = std::move(waiting_);
  waiting_.clear();
  log_.debug("asking PodResources who holds devices");
  lister_.List(
      [this](absl::StatusOr<plugin::DeviceHolders> answer) { OnAnswer(std::move(answer)); });
}

void HolderTracker::OnAnswer(absl::StatusOr<plugin::DeviceHolders> answer) {
  in_flight_ = false;
  std::vector<Fresh> answered = std::move(riding_);
  riding_.clear();
  bool changed = false;
  if (answer.ok()) {
    failing_ = false;
    const auto now = clock_.Now();
    const size_t before = pending_.size();
    for (auto it = pending_.begin(); it != pending_.end();) {
      const bool seen = answer->count(it->first) != 0;
      it = (seen || now - it->second.second >= kPendingAllocation) ? pending_.erase(it)
                                                                   : std::next(it);
    }
    // An allocation that expired unseen frees its group-mates too.
    changed = *answer != holders_ || pending_.size() != before;
    holders_ = *std::move(answer);
  } else if (!failing_) {
    failing_ = true;
    log_.warn("PodResources: {}", ToStd(answer.status().message()));
  }
  const absl::StatusOr<Holders> view =
      answer.ok() ? absl::StatusOr<Holders>(WithPending(holders_)) : answer.status();
  for (Fresh& then : answered) then(view);
  // Askers that came meanwhile need an answer sent after them.
  if (!waiting_.empty()) {
    Send();
  } else if (polling_) {
    next_poll_ = clock_.Now() + kPollInterval;
  }
  if (changed && on_change_) on_change_();
}

}  // namespace pcid::agent
