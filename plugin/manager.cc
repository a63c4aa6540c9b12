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

PluginManager::Lifecycle::Lifecycle() {
  thread_ = std::thread([this] {
    for (;;) {
      std::function<void()> task;
      {
        MutexLock lock(&mu_);
        while (tasks_.empty() && !stopping_) cv_.Wait(&mu_);
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  });
}

PluginManager::Lifecycle::~Lifecycle() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  thread_.join();
}

void PluginManager::Lifecycle::Run(std::function<void()> task) {
  {
    MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.Signal();
}

void PluginManager::Retire(std::unique_ptr<DevicePluginServer> server) {
  if (!server) return;
  auto held = std::make_shared<std::unique_ptr<DevicePluginServer>>(std::move(server));
  lifecycle_.Run([held] { held->reset(); });  // ends its streams, removes its socket
}

void PluginManager::Start(const std::string& name, const Resource& resource, bool register_now) {
  Entry& e = plugins_[name];
  e.resource = resource;
  e.registered = false;
  // The old server (if any) removes its socket first: the lifecycle thread runs in order.
  Retire(std::move(e.server));
  e.starting = true;
  e.register_pending = register_now;
  const uint64_t generation = ++e.generation;
  const std::string path = options_.plugin_dir + "/" + PluginSocketName(name);
  lifecycle_.Run([this, path, resource, hooks = options_.hooks, post = post_,
                  alive = std::weak_ptr<bool>(alive_), name, generation] {
    if (auto a = alive.lock(); !a || !*a) return;
    auto server = std::make_shared<absl::StatusOr<std::unique_ptr<DevicePluginServer>>>(
        DevicePluginServer::Start(path, resource, hooks));
    post([this, alive, name, generation, server] {
      if (auto a = alive.lock(); !a || !*a) return;  // the manager destroys what it holds
      OnStarted(name, generation, std::move(*server));
    });
  });
}

void PluginManager::OnStarted(const std::string& name, uint64_t generation,
                              absl::StatusOr<std::unique_ptr<DevicePluginServer>> server) {
  auto it = plugins_.find(name);
  if (it == plugins_.end() || it->second.generation != generation) {
    // Stopped, or restarted again, meanwhile.
    if (server.ok()) Retire(*std::move(server));
    return;
  }
  Entry& e = it->second;
  e.starting = false;
  if (!server.ok()) {
    log_.error("{}: {}", name, ToStd(server.status().message()));
    e.retry_at = Clock::now() + std::chrono::seconds(1);
    return;
  }
  e.server = *std::move(server);
  // The resource may have changed while it was built; no kubelet has connected yet, so this
  // sends nothing.
  e.server->Update(e.resource);
  log_.info("{}: serving {} devices on {}", name, e.resource.devices.size(),
            e.server->socket_path());
  if (e.register_pending) {
    e.register_pending = false;
    Register(name);
  }
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
    post([this, alive, name, attempt, status = std::move(status)] {
      if (auto a = alive.lock(); !a || !*a) return;
      auto it = plugins_.find(name);
      if (it == plugins_.end() || it->second.attempt != attempt) return;  // superseded
      Entry& e = it->second;
      if (options_.registered) options_.registered(status.ok());
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

void PluginManager::Apply(const std::map<std::string, Resource>& resources,
                          const std::set<std::string>& changed) {
  for (const std::string& name : changed) {
    auto it = plugins_.find(name);
    auto planned = resources.find(name);
    if (planned == resources.end()) {
      if (it == plugins_.end()) continue;
      log_.info("{}: no devices left, stopping its plugin", name);
      Retire(std::move(it->second.server));
      plugins_.erase(it);
      continue;
    }
    const Resource& resource = planned->second;
    if (it == plugins_.end() || (!it->second.server && !it->second.starting)) {
      Start(name, resource);
    } else if (it->second.resource != resource) {
      // Streams are only woken for a real change: a quiet node sends nothing. A server still
      // starting gets the latest resource when it is up.
      it->second.resource = resource;
      if (it->second.server) it->second.server->Update(resource);
    }
  }
}

void PluginManager::RegisterAll() {
  // Registers every plugin now; any debounced or back-off registration is superseded.
  for (auto& [name, e] : plugins_) {
    if (e.server) {
      Register(name);
    } else if (e.starting) {
      e.register_pending = true;
    }
  }
}

void PluginManager::OnSocketDeleted(const std::string& file_name, bool register_now) {
  for (auto& [name, e] : plugins_) {
    if (PluginSocketName(name) == file_name && (e.server || e.starting)) {
      log_.info("{}: socket {} deleted, restarting the plugin", name, file_name);
      const Resource resource = e.resource;
      Start(name, resource, /*register_now=*/false);
      // A kubelet restart deletes every socket, then re-creates kubelet.sock, which registers
      // everything (RegisterAll). Register on our own only if that has not happened shortly.
      if (register_now) e.retry_at = Clock::now() + kRegisterDebounce;
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
    } else if (e.starting) {
      e.retry_at.reset();
      e.register_pending = true;  // once it is up
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
