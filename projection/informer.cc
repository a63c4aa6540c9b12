#include "projection/informer.h"

#include <absl/cleanup/cleanup.h>
#include <absl/strings/str_cat.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/status.h"
#include "projection/kube_client.h"

namespace pcid::projection {

bool Shutdown::stopping() const {
  MutexLock lock(&mu_);
  return stopping_;
}

bool Shutdown::SleepFor(std::chrono::milliseconds d) {
  // A real sleep (nothing is decided by the time it ends): the steady clock bounds it.
  const auto until = std::chrono::steady_clock::now() + d;
  MutexLock lock(&mu_);
  while (!stopping_) {
    const auto left = until - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) break;
    changed_.WaitWithTimeout(&mu_, left);
  }
  return !stopping_;
}

bool Shutdown::Enlist(KubeClient* client) {
  MutexLock lock(&mu_);
  if (stopping_) return false;
  clients_.push_back(client);
  return true;
}

void Shutdown::Unlist(KubeClient* client) {
  MutexLock lock(&mu_);
  std::erase(clients_, client);
  changed_.SignalAll();
}

void Shutdown::Stop() {
  MutexLock lock(&mu_);
  stopping_ = true;
  changed_.SignalAll();
  while (!clients_.empty()) {
    for (KubeClient* c : clients_) c->Stop();
    changed_.WaitWithTimeout(&mu_, std::chrono::milliseconds(50));
  }
}

Informer::Informer(Resource resource, Store& store, Notify notify, Shutdown& shutdown,
                   spdlog::logger& log, Backoff::Policy backoff)
    : resource_(std::move(resource)),
      base_(absl::StrCat(resource_.prefix, resource_.plural, "?", resource_.selector)),
      store_(store),
      notify_(std::move(notify)),
      shutdown_(shutdown),
      log_(log),
      backoff_(backoff) {}

void Informer::Run(const KubeConfig& config) {
  auto client = KubeClient::Create(config);
  if (!client.ok()) {
    log_.error("{}: {}", resource_.plural, ToStd(client.status().message()));
    return;
  }
  if (!shutdown_.Enlist(client->get())) return;
  absl::Cleanup unlist = [&] { shutdown_.Unlist(client->get()); };
  while (!shutdown_.stopping()) {
    if (absl::Status listed = List(**client); !listed.ok()) {
      if (absl::IsNotFound(listed) && resource_.optional) {
        store_.Replace(ObservedList{});
        notify_(StoreListed{resource_.plural});
        listed = absl::NotFoundError(absl::StrCat(
            listed.message(), " (not installed? no objects until it is; listing again later)"));
      }
      if (!Fail(ToStd(listed.message()))) return;
      continue;
    }
    if (!Watch(**client)) return;
  }
}

absl::Status Informer::List(KubeClient& client) {
  PCID_ASSIGN_OR_RETURN(KubeResponse res, client.Call("GET", base_));
  if (res.status != 200) {
    const std::string why = absl::StrCat("list: HTTP ", res.status, ": ", StatusMessage(res.body));
    return res.status == 404 ? absl::NotFoundError(why) : absl::UnavailableError(why);
  }
  absl::StatusOr<ObservedList> list = DecodeList(res.body);
  if (!list.ok())
    return absl::InvalidArgumentError(absl::StrCat("list: ", list.status().message()));
  for (const std::string& why : list->skipped) {
    log_.warn("{}: list: skipped {}", resource_.plural, why);
  }
  if (failing_) log_.info("{}: API server reachable again", resource_.plural);
  failing_ = false;
  backoff_.Reset();
  store_.Replace(*std::move(list));
  notify_(StoreListed{resource_.plural});
  return absl::OkStatus();
}

Informer::LineResult Informer::OnWatchLine(std::string_view line, int& error_code) {
  absl::StatusOr<WatchEvent> ev = DecodeWatchEvent(line);
  if (!ev.ok()) {
    log_.warn("{}: bad watch event: {}", resource_.plural, ToStd(ev.status().message()));
    return LineResult::kBroken;
  }
  if (ev->type == "ERROR") {
    error_code = ev->code;
    return LineResult::kError;
  }
  if (store_.Apply(*std::move(ev))) notify_(StoreChanged{resource_.plural});
  return LineResult::kContinue;
}

bool Informer::Watch(KubeClient& client) {
  while (true) {
    const std::string rv = store_.resource_version();
    int code = 0;
    bool broken = false;
    absl::StatusOr<int> status = client.Stream(
        absl::StrCat(base_,
                     "&watch=1&allowWatchBookmarks=true&timeoutSeconds=20&resourceVersion=", rv),
        [&](std::string_view line) {
          switch (OnWatchLine(line, code)) {
            case LineResult::kContinue:
              return true;
            case LineResult::kError:
              return false;
            case LineResult::kBroken:
              broken = true;
              return false;
          }
          return false;
        });
    if (shutdown_.stopping()) return false;
    if (broken) return shutdown_.SleepFor(backoff_.Next());
    if (code == 410 || (status.ok() && *status == 410)) {
      log_.info("{}: resourceVersion {} too old (410 Gone): relisting", resource_.plural,
                store_.resource_version());
      return true;
    }
    if (!status.ok() || *status / 100 != 2 || code != 0) {
      log_.warn("{}: watch ended ({}); relisting after back-off", resource_.plural,
                status.ok()
                    ? absl::StrCat("HTTP ", *status, code ? absl::StrCat(", error ", code) : "")
                    : std::string(status.status().message()));
      return shutdown_.SleepFor(backoff_.Next());
    }
    // The stream ended normally (timeoutSeconds): resume from the last resourceVersion.
  }
}

bool Informer::Fail(std::string_view why) {
  if (!failing_) log_.warn("{}: {}; retrying with back-off", resource_.plural, why);
  failing_ = true;
  return shutdown_.SleepFor(backoff_.Next());
}

}  // namespace pcid::projection
