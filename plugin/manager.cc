#include "plugin/manager.h"

#include <deviceplugin/v1beta1/api.grpc.pb.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include "core/naming.h"
#include "core/status.h"
#include "plugin/registration.h"

namespace pcid::plugin {

// How long a restarted plugin waits for kubelet.sock to reappear before registering on its own.
constexpr std::chrono::milliseconds kRegisterDebounce{100};

PluginManager::PluginManager(Options options, std::function<void(std::function<void()>)> post,
                             spdlog::logger& log)
    : options_(std::move(options)),
      post_(std::move(post)),
      log_(log),
      alive_(std::make_shared<bool>(true)) {}

PluginManager::~PluginManager() { *alive_ = false; }

void PluginManager::Start(const std::string& name, const Resource& resource, bool register_now) {
  Entry& e = plugins_[name];
  e.resource = resource;
  e.registered = false;
  e.server.reset();  // the old server (if any) removes its socket first
  const std::string path = options_.plugin_dir + "/" + PluginSocketName(name);
  auto server = DevicePluginServer::Start(path, resource, options_.hooks);
  if (!server.ok()) {
    log_.error("{}: {}", name, ToStd(server.status().message()));
    e.retry_at = Clock::now() + std::chrono::seconds(1);
    return;
  }
  e.server = *std::move(server);
  log_.info("{}: serving {} devices on {}", name, resource.devices.size(), path);
  if (register_now) Register(name);
}

void PluginManager::Register(const std::string& name) {
  Entry& e = plugins_.at(name);
  e.retry_at.reset();
  const uint64_t attempt = ++e.attempt;  // supersedes any call still in flight
  const std::string kubelet = options_.plugin_dir + "/kubelet.sock";
  if (::access(kubelet.c_str(), F_OK) != 0) {
    // No kubelet yet: its socket's creation (inotify) triggers RegisterAll.
    log_.info("{}: waiting for {}", name, kubelet);
    return;
  }
  RegistrationRequest req{kubelet, e.server->endpoint(), name, options_.register_timeout};
  std::weak_ptr<bool> alive = alive_;
  // The callback may run after this manager is gone: it touches only its own copies until the
  // posted closure, on the owner thread, has checked `alive`.
  RegisterAsync(calls_, req, [this, post = post_, alive, name, attempt](absl::Status status) {
    post([this, alive, name, attempt, status] {
      if (auto a = alive.lock(); !a || !*a) return;
      auto it = plugins_.find(name);
      if (it == plugins_.end() || it->second.attempt != attempt) return;  // superseded
      Entry& e = it->second;
      if (status.ok()) {
        e.registered = true;
        e.backoff.Reset();
        log_.info("{}: registered with the kubelet", name);
        return;
      }
      e.registered = false;
      // The first retry is quick: kubelet.sock exists from bind(), a moment before the kubelet
      // listens on it.
      const std::chrono::milliseconds delay = e.backoff.Next();
      e.retry_at = Clock::now() + delay;
      log_.warn("{}: {} (retry in {:.1f} s)", name, ToStd(status.message()),
                static_cast<double>(delay.count()) / 1000);
    });
  });
}

void PluginManager::Apply(const std::map<std::string, Resource>& resources) {
  for (auto it = plugins_.begin(); it != plugins_.end();) {
    if (!resources.count(it->first)) {
      log_.info("{}: no devices left, stopping its plugin", it->first);
      it = plugins_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [name, resource] : resources) {
    auto it = plugins_.find(name);
    if (it == plugins_.end() || !it->second.server) {
      Start(name, resource);
    } else if (it->second.resource != resource) {
      // Streams are only woken for a real change: a quiet node sends nothing.
      it->second.resource = resource;
      it->second.server->Update(resource);
    }
  }
}

void PluginManager::RegisterAll() {
  // Registers every plugin now; any debounced or back-off registration is superseded.
  for (auto& [name, e] : plugins_) {
    if (e.server) Register(name);
  }
}

void PluginManager::OnSocketDeleted(const std::string& file_name, bool register_now) {
  for (auto& [name, e] : plugins_) {
    if (e.server && e.server->endpoint() == file_name) {
      log_.info("{}: socket {} deleted, restarting the plugin", name, file_name);
      const Resource resource = e.resource;
      Start(name, resource, /*register_now=*/false);
      // A kubelet restart deletes every socket, then re-creates kubelet.sock, which registers
      // everything (RegisterAll). Register on our own only if that has not happened shortly.
      if (register_now && e.server) e.retry_at = Clock::now() + kRegisterDebounce;
      return;
    }
  }
}

std::optional<PluginManager::Clock::duration> PluginManager::NextWake() const {
  std::optional<Clock::time_point> next;
  for (const auto& [name, e] : plugins_) {
    if (e.retry_at && (!next || *e.retry_at < *next)) next = e.retry_at;
  }
  if (!next) return std::nullopt;
  return std::max(Clock::duration::zero(), *next - Clock::now());
}

void PluginManager::RunDue() {
  const auto now = Clock::now();
  std::vector<std::string> due;
  for (const auto& [name, e] : plugins_) {
    if (e.retry_at && *e.retry_at <= now) due.push_back(name);
  }
  for (const std::string& name : due) {
    Entry& e = plugins_.at(name);
    if (e.server) {
      Register(name);
    } else {
      const Resource resource = e.resource;
      Start(name, resource);
    }
  }
}

size_t PluginManager::registered() const {
  return std::count_if(plugins_.begin(), plugins_.end(),
                       [](const auto& p) { return p.second.registered; });
}

}  // namespace pcid::plugin
