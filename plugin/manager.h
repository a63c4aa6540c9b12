// File: plugin/manager.h
//
// Keeps one DevicePluginServer per resource and each registered with the kubelet: a plugin starts
// with its resource's first device and stops after its last; every plugin is registered again
// when kubelet.sock reappears (kubelet restart) and restarted when its own socket is deleted.
// Failed registrations are retried with jittered exponential back-off (0.1 s .. 30 s).
// Servers are built and torn down on a thread of the manager's own (starting one is a few
// milliseconds of gRPC setup, stopping one may wait for calls in flight): the owner thread only
// hands them over, in order, so a plugin's old server is gone before its new one listens.
//
// Owner-thread only, except that registration results and started servers arrive through `post`
// (which must run the function on the owner thread).
#pragma once

#include <absl/status/statusor.h>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "core/backoff.h"
#include "core/mutex.h"
#include "plugin/client_queue.h"
#include "plugin/device_plugin_server.h"
#include "plugin/resources.h"

namespace spdlog {
class logger;
}

namespace pcid::plugin {

class PluginManager {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    std::string plugin_dir;  // where our sockets and kubelet.sock live
    ServerHooks hooks;
    std::chrono::milliseconds register_timeout{5000};
    // Told of each registration's outcome, on the owner thread (metrics).
    std::function<void(bool ok)> registered;
  };
  PluginManager(Options options, std::function<void(std::function<void()>)> post,
                spdlog::logger& log);
  ~PluginManager();

  // Starts, updates and stops plugins so that exactly `resources` are served.
  // `resources` is the whole plan; only those named in `changed` are looked at (a name not in
  // `resources` stops its plugin).
  void Apply(const std::map<std::string, Resource>& resources,
             const std::set<std::string>& changed);
  // kubelet.sock was (re)created: register every plugin again.
  void RegisterAll();
  // A file in the plugin directory was deleted; restarts the plugin if it was one of ours, and
  // registers it shortly unless `register_now` is false (a RegisterAll follows: kubelet restart)
  // or kubelet.sock reappears meanwhile.
  void OnSocketDeleted(const std::string& file_name, bool register_now);
  // Time until the next due retry (nullopt: none pending); RunDue() runs the due ones.
  std::optional<Clock::duration> NextWake() const;
  void RunDue();

  size_t size() const { return plugins_.size(); }
  // Resource names whose last registration succeeded.
  size_t registered() const;

 private:
  struct Entry {
    std::unique_ptr<DevicePluginServer> server;
    Resource resource;
    uint64_t generation = 0;        // identifies the latest server start asked for
    bool starting = false;          // a server is being built on the lifecycle thread
    bool register_pending = false;  // register once the server being built is up
    bool registered = false;
    uint64_t attempt = 0;  // identifies the latest Register call
    // Jittered exponential back-off for failed registrations: 0.1 s doubling to 30 s, +-25 %.
    Backoff backoff{{std::chrono::milliseconds(100), std::chrono::seconds(30), 0.25}};
    std::optional<Clock::time_point> retry_at;
  };
  void Start(const std::string& name, const Resource& resource, bool register_now = true);
  void OnStarted(const std::string& name, uint64_t generation,
                 absl::StatusOr<std::unique_ptr<DevicePluginServer>> server);
  void Register(const std::string& name);
  // Destroys `server` on the lifecycle thread.
  void Retire(std::unique_ptr<DevicePluginServer> server);

  // Runs server starts and stops in order on one thread of its own.
  class Lifecycle {
   public:
    Lifecycle();
    ~Lifecycle();  // runs what is queued, then joins
    void Run(std::function<void()> task);

   private:
    Mutex mu_;
    CondVar cv_;
    std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
    bool stopping_ ABSL_GUARDED_BY(mu_) = false;
    std::thread thread_;
  };

  Options options_;
  ClientQueue calls_;  // Register calls; outlives plugins_ (declared first, destroyed last)
  std::function<void(std::function<void()>)> post_;
  spdlog::logger& log_;
  std::map<std::string, Entry> plugins_;
  std::shared_ptr<bool> alive_;  // registration callbacks posted after destruction are dropped
  Lifecycle lifecycle_;          // last: joined first, with the servers it still holds
};

}  // namespace pcid::plugin
