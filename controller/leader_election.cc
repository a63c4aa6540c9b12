#include "controller/leader_election.h"

#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include "controller/cluster.h"
#include "core/json_writer.h"
#include "core/status.h"
#include "projection/informer.h"
#include "projection/kube_client.h"
#include "projection/objects.h"
#include "projection/status_patch.h"

namespace pcid::controller {
absl::Status CheckLeaseConfig(const LeaseConfig& c) {
  if (c.identity.empty()) {
    return absl::InvalidArgumentError("leader election: no identity (POD_NAME or the host name)");
  }
  if (c.ns.empty() || c.name.empty()) {
    return absl::InvalidArgumentError("leader election: the Lease needs a namespace and a name");
  }
  if (c.renew_deadline >= c.lease_duration) {
    return absl::InvalidArgumentError(
        "--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration");
  }
  if (c.retry_period >= c.renew_deadline || c.retry_period.count() <= 0) {
    return absl::InvalidArgumentError(
        "--leader-elect-retry-period must be positive and shorter than "
        "--leader-elect-renew-deadline");
  }
  if (c.lease_duration < std::chrono::seconds(1)) {
    return absl::InvalidArgumentError("--leader-elect-lease-duration must be 1s or more");
  }
  return absl::OkStatus();
}

LeaderElector::LeaderElector(LeaseConfig config, projection::KubeCaller& client, const Clock& clock,
                             spdlog::logger& log)
    : config_(std::move(config)), client_(client), clock_(clock), log_(log) {}

std::string LeaderElector::Path() const {
  return absl::StrCat("/apis/coordination.k8s.io/v1/namespaces/", config_.ns, "/leases/",
                      config_.name);
}

std::string LeaderElector::LeaseJson(const Record& r) const {
  JsonWriter w;
  w.BeginObject().Key("apiVersion").String("coordination.k8s.io/v1").Key("kind").String("Lease");
  w.Key("metadata").BeginObject().Key("name").String(config_.name);
  w.Key("namespace").String(config_.ns);
  if (!r.resource_version.empty()) w.Key("resourceVersion").String(r.resource_version);
  w.EndObject();
  w.Key("spec").BeginObject().Key("holderIdentity").String(r.holder);
  w.Key("leaseDurationSeconds").Int(r.duration_seconds);
  w.Key("acquireTime").String(r.acquire_time).Key("renewTime").String(r.renew_time);
  w.Key("leaseTransitions").Int(r.transitions).EndObject();
  w.EndObject();
  return w.str();
}

bool LeaderElector::TryAcquireOrRenew() {
  const Clock::time_point now = clock_.Now();
  auto fail = [&](const std::string& why) {
    if (!failing_) log_.warn("leader election: lease {}/{}: {}", config_.ns, config_.name, why);
    failing_ = true;
    return leading();  // a leader keeps leading through failures shorter than the deadline
  };
  auto decode = [](const std::string& body) -> absl::StatusOr<Record> {
    PCID_ASSIGN_OR_RETURN(projection::ObservedObject o, projection::DecodeObject(body));
    Record r;
    r.resource_version = o.resource_version;
    auto number = [&](const char* key) {
      auto it = o.spec_ints.find(key);
      return it == o.spec_ints.end() ? int64_t{0} : it->second;
    };
    r.holder = SpecText(o, "holderIdentity");
    r.acquire_time = SpecText(o, "acquireTime");
    r.renew_time = SpecText(o, "renewTime");
    r.duration_seconds = number("leaseDurationSeconds");
    r.transitions = number("leaseTransitions");
    return r;
  };
  const int64_t duration_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(config_.lease_duration).count();
  const std::string stamp = projection::MicroTimeNow();

  absl::StatusOr<projection::KubeResponse> got = client_.Call("GET", Path());
  if (!got.ok()) return fail(std::string(ToStd(got.status().message())));
  if (got->status == 404) {
    Record mine{config_.identity, duration_seconds, stamp, stamp, 0, ""};
    absl::StatusOr<projection::KubeResponse> created = client_.Call(
        "POST", absl::StrCat("/apis/coordination.k8s.io/v1/namespaces/", config_.ns, "/leases"),
        LeaseJson(mine));
    if (!created.ok()) return fail(std::string(ToStd(created.status().message())));
    if (created->status != 201 && created->status != 200) {
      return fail(absl::StrCat("create: HTTP ", created->status, ": ",
                               projection::StatusMessage(created->body)));
    }
    absl::StatusOr<Record> record = decode(created->body);
    observed_ = record.ok() ? *record : mine;
    observed_at_ = renewed_at_ = now;
    failing_ = false;
    if (!held_)
      log_.info("leader election: {} acquired lease {}/{}", config_.identity, config_.ns,
                config_.name);
    return held_ = true;
  }
  if (got->status != 200) {
    return fail(
        absl::StrCat("get: HTTP ", got->status, ": ", projection::StatusMessage(got->body)));
  }
  absl::StatusOr<Record> current = decode(got->body);
  if (!current.ok()) return fail(std::string(ToStd(current.status().message())));
  // The holder's clock is not ours: what counts is when we saw the record change.
  Record seen = *current;
  seen.resource_version.clear();
  Record before = observed_.value_or(Record{});
  before.resource_version.clear();
  if (!observed_ || seen != before) observed_at_ = now;
  observed_ = *current;
  const bool ours = current->holder == config_.identity;
  if (!ours && !current->holder.empty() &&
      now < observed_at_ + std::chrono::seconds(std::max<int64_t>(current->duration_seconds, 1))) {
    failing_ = false;
    if (held_)
      log_.warn("leader election: {} holds lease {}/{} now", current->holder, config_.ns,
                config_.name);
    return held_ = false;
  }
  Record next = *current;
  next.holder = config_.identity;
  next.duration_seconds = duration_seconds;
  next.renew_time = stamp;
  if (!ours) {
    next.acquire_time = stamp;
    ++next.transitions;
  }
  absl::StatusOr<projection::KubeResponse> put = client_.Call("PUT", Path(), LeaseJson(next));
  if (!put.ok()) return fail(std::string(ToStd(put.status().message())));
  if (put->status == 409) {
    // Another candidate (or, for a leader, whoever took over) wrote first: read again next time.
    failing_ = false;
    return held_ = false;
  }
  if (put->status != 200) {
    return fail(
        absl::StrCat("update: HTTP ", put->status, ": ", projection::StatusMessage(put->body)));
  }
  absl::StatusOr<Record> written = decode(put->body);
  observed_ = written.ok() ? *written : next;
  observed_at_ = renewed_at_ = now;
  failing_ = false;
  if (!ours) {
    log_.info("leader election: {} acquired lease {}/{}{}", config_.identity, config_.ns,
              config_.name, current->holder.empty() ? "" : absl::StrCat(" from ", current->holder));
  }
  return held_ = true;
}

bool LeaderElector::leading() const {
  return held_ && clock_.Now() < renewed_at_ + config_.renew_deadline;
}

absl::Status LeaderElector::Release() {
  if (!held_ || !observed_ || observed_->holder != config_.identity) return absl::OkStatus();
  Record released = *observed_;
  released.holder.clear();
  released.duration_seconds = 1;
  released.renew_time = released.acquire_time = projection::MicroTimeNow();
  absl::StatusOr<projection::KubeResponse> put = client_.Call("PUT", Path(), LeaseJson(released));
  held_ = false;
  if (!put.ok()) return put.status();
  if (put->status != 200) {
    return absl::AbortedError(absl::StrCat("leader election: releasing lease ", config_.ns, "/",
                                           config_.name, ": HTTP ", put->status, ": ",
                                           projection::StatusMessage(put->body)));
  }
  log_.info("leader election: {} released lease {}/{}", config_.identity, config_.ns, config_.name);
  return absl::OkStatus();
}

bool LeaderElector::Run(projection::Shutdown& shutdown, const std::function<void()>& on_leading) {
  bool started = false;
  while (!shutdown.stopping()) {
    const bool was_leading = leading();
    TryAcquireOrRenew();
    if (was_leading && !leading()) {
      log_.error("leader election: {} lost lease {}/{} (no renewal for {} ms)", config_.identity,
                 config_.ns, config_.name, config_.renew_deadline.count());
      return false;
    }
    if (!started && held_) {
      started = true;
      on_leading();
    }
    if (!shutdown.SleepFor(config_.retry_period)) break;
  }
  if (absl::Status s = Release(); !s.ok()) {
    log_.warn("leader election: {}", ToStd(s.message()));
  }
  return true;
}

}  // namespace pcid::controller
