// File: plugin/manager.h
//
// Keeps one DevicePluginServer per resource and each registered with the kubelet: a plugin starts
// with its resource's first device and stops after its last; every plugin is registered again
// when kubelet.sock reappears (kubelet restart) and restarted when its own socket is deleted.
// Failed registrations are retried with jittered exponential back-off (0.1 s .. 30 s).
//
// Owner-thread only, except that registration results arrive through `post` (which must run the
// function on the owner thread).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/backoff.h"
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
  };
  PluginManager(Options options, std::function<void(std::function<void()>)> post,
                spdlog::logger& log);
  ~PluginManager();

  // Starts, updates and stops plugins so that exactly `resources` are served.
  void Apply(const std::map<std::string, Resource>& resources);
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
    bool registered = false;
    uint64_t attempt = 0;  // identifies the latest Register call
    // Jittered exponential back-off for failed registrations: 0.1 s doubling to 30 s, +-25 %.
    Backoff backoff{{std::chrono::milliseconds(100), std::chrono::seconds(30), 0.25}};
    std::optional<Clock::time_point> retry_at;
  };
  void Start(const std::string& name, const Resource& resource, bool register_now = true);
  void Register(const std::string& name);

  Options options_;
  ClientQueue calls_;  // Register calls; outlives plugins_ (declared first, destroyed last)
  std::function<void(std::function<void()>)> post_;
  spdlog::logger& log_;
  std::map<std::string, Entry> plugins_;
  std::shared_ptr<bool> alive_;  // registration callbacks posted after destruction are dropped
};

}  // namespace pcid::plugin
