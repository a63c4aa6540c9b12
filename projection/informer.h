// File: projection/informer.h
//
// Informers, as client-go's: one per resource kind, each on its own thread with its own
// KubeClient, keeping its Store (projection/store.h) current: list, then watch from the list's
// resourceVersion with bookmarks; a stream that ends resumes from the last resourceVersion, a
// 410 Gone or an event that does not decode relists, a failure backs off (jittered, 0.5 s to
// 30 s). Each change of the store is told to the controllers as a typed message
// (StoreListed / StoreChanged). Also the projection's Shutdown: stopping, and the clients to cut.
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/status/status.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "core/backoff.h"
#include "core/mutex.h"
#include "projection/kubeconfig.h"
#include "projection/messages.h"
#include "projection/store.h"

namespace spdlog {
class logger;
}

namespace pcid::projection {

class KubeClient;

// The projection's stop signal, shared by its threads. httplib's stop() only cuts a request
// already in flight: a request that was just starting when its client was stopped opens a fresh
// connection, so Stop() stops every listed client again every 50 ms until each thread has
// unlisted its client. Thread-safe.
class Shutdown {
 public:
  bool stopping() const;
  // Waits up to `d`; false when stopping (at once, however long `d`).
  bool SleepFor(std::chrono::milliseconds d);
  // Lists a thread's client to be stopped, until Unlist; false (nothing listed) when stopping.
  bool Enlist(KubeClient* client);
  void Unlist(KubeClient* client);
  // Sets stopping; returns once every listed client is unlisted. Any thread but those.
  void Stop();

 private:
  mutable Mutex mu_;
  CondVar changed_;  // stopping_ set, a client unlisted
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<KubeClient*> clients_ ABSL_GUARDED_BY(mu_);
};

// Where a resource lives: "/apis/devices.harvesterhci.io/v1beta1/" + "pcidevices" +
// "?labelSelector=..." (selector "" = every object).
struct Resource {
  std::string prefix;
  std::string plural;
  std::string selector;
  // A kind that may not be installed (KubeVirt's, for the cluster controller): a list answered
  // 404 counts as listed with no objects, and is tried again after the back-off, so that the
  // kind installed later is seen.
  bool optional = false;
};

// The watches' back-off: 0.5 s doubling to 30 s, each delay scaled by 0.75-1.25.
inline constexpr Backoff::Policy kWatchBackoff{std::chrono::milliseconds(500),
                                               std::chrono::milliseconds(30000), 0.25};

class Informer {
 public:
  using Notify = std::function<void(Message)>;
  // `store` and `shutdown` outlive the informer; `notify` is called on the informer's thread.
  Informer(Resource resource, Store& store, Notify notify, Shutdown& shutdown, spdlog::logger& log,
           Backoff::Policy backoff = kWatchBackoff);

  // Lists and watches until `shutdown` stops; the calling thread is the informer's.
  void Run(const KubeConfig& config);

  // One watch line, applied to the store (and told when it changed it). kContinue; kError with
  // the ERROR event's code (410: relist); kBroken for a line that does not decode (resuming would
  // bring it back at once: relist after a back-off). Informer's thread; for tests too.
  enum class LineResult { kContinue, kError, kBroken };
  LineResult OnWatchLine(std::string_view line, int& error_code);

 private:
  // One list into the store; an error names the call.
  absl::Status List(KubeClient& client);
  // Watches from the store's resourceVersion until the stream must be relisted: true to relist
  // at once, false when stopping. Streams that end normally are resumed inside.
  bool Watch(KubeClient& client);
  // Logs the first failure of a run of them; waits the back-off. False when stopping.
  bool Fail(std::string_view why);

  const Resource resource_;
  const std::string base_;  // prefix + plural + "?" + selector
  Store& store_;
  Notify notify_;
  Shutdown& shutdown_;
  spdlog::logger& log_;
  Backoff backoff_;
  bool failing_ = false;  // a failure was logged; "reachable again" is logged once it ends
};

}  // namespace pcid::projection
