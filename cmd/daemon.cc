// The daemon: wiring and the owner loop. Every decision is the reconciler's (agent/); this file
// connects it to the world (signals, inotify, uevents, the event queue, the control socket, the
// plugin manager, PodResources, the projection) and measures how long each handler holds the loop.
#include "cmd/daemon.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <optional>

#include "agent/config.h"
#include "agent/kernel_binder.h"
#include "agent/plugin_hooks.h"
#include "agent/reconciler.h"
#include "cmd/control_socket.h"
#include "cmd/daemon_metrics.h"
#include "cmd/logging.h"
#include "cmd/metrics_server.h"
#include "cmd/vfio_command.h"
#include "core/event_queue.h"
#include "core/status.h"
#include "core/thread_priority.h"
#include "dra/cdi.h"
#include "dra/driver.h"
#include "dra/kubelet_plugin.h"
#include "plugin/manager.h"
#include "plugin/pod_resources.h"
#include "projection/kube_client.h"
#include "projection/projection.h"
#include "udev/discovery.h"
#include "udev/monitor.h"

namespace pcid::cmd {
namespace {

// How long one turn of the owner loop runs posted work (kernel jobs' answers) before it looks at
// its sockets and timers again: a batch of thousands of answers is taken over several turns.
constexpr std::chrono::milliseconds kPostedSlice{2};

using SteadyTime = std::chrono::steady_clock;

// The pod's service-account directory (token, ca.crt, namespace). PCIDEVICES_SERVICE_ACCOUNT_DIR
// points elsewhere: the e2e test logs in as the DaemonSet does, from a temporary directory.
std::string ServiceAccountDir() {
  const char* dir = ::getenv("PCIDEVICES_SERVICE_ACCOUNT_DIR");
  return dir && *dir ? dir : "/var/run/secrets/kubernetes.io/serviceaccount";
}

// The signals the daemon takes through its signalfd.
sigset_t DaemonSignals() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  return mask;
}

// The plugin manager as the reconciler's PluginSink.
class ManagerSink final : public agent::PluginSink {
 public:
  ManagerSink(plugin::PluginManager& manager, HealthChanges& health)
      : manager_(manager), health_(health) {}
  void Apply(const std::map<std::string, plugin::Resource>& r,
             const std::set<std::string>& changed) override {
    health_.Observe(r, changed);
    manager_.Apply(r, changed);
  }
  void RegisterAll() override { manager_.RegisterAll(); }
  void OnSocketDeleted(const std::string& file, bool register_now) override {
    manager_.OnSocketDeleted(file, register_now);
  }

 private:
  plugin::PluginManager& manager_;
  HealthChanges& health_;
};

class ProjectionPublisher final : public agent::InventoryPublisher {
 public:
  explicit ProjectionPublisher(projection::Projection& p) : p_(p) {}
  void Publish(std::shared_ptr<const projection::Inventory> inv) override {
    p_.Publish(std::move(inv));
  }

 private:
  projection::Projection& p_;
};

// The kubelet's PodResources socket, asked asynchronously; answers posted to the owner thread
// (also the immediate one when there is no kubelet), never run inside List.
class KubeletPodResources final : public agent::PodResourcesLister {
 public:
  KubeletPodResources(std::string socket, agent::Post post)
      : socket_(std::move(socket)), post_(std::move(post)) {}
  void List(std::function<void(absl::StatusOr<plugin::DeviceHolders>)> done) override {
    plugin::ListPodResourcesAsync(
        calls_, socket_, {}, std::chrono::seconds(2),
        [post = post_, done = std::move(done)](absl::StatusOr<plugin::DeviceHolders> holders) {
          post([done, holders = std::move(holders)] { done(holders); });
        });
  }

 private:
  std::string socket_;
  agent::Post post_;
  plugin::ClientQueue calls_;  // calls in flight; destroyed (cancelled) with this
};

// The longest time one handler held the owner loop, for the log and the benches: every handler
// should be quick (≤ 5 ms), the kernel's and the kubelet's waits being elsewhere. Wall time, and
// the thread's own CPU time: on a busy node the wall time also counts the time the scheduler
// gave the CPU to other processes in the middle of a handler.
class LoopTimer {
 public:
  LoopTimer(spdlog::logger& log, metrics::Family<metrics::DurationHistogram>& histogram)
      : log_(log), histogram_(histogram) {}
  // `what` names the handler in the log and in the metric's label.
  template <typename Fn>
  void Run(const char* what, Fn&& fn) {
    const auto t0 = SteadyTime::now();
    const auto cpu0 = ThreadCpuTime();
    const auto sw0 = ContextSwitches();
    fn();
    const auto took = SteadyTime::now() - t0;
    const auto cpu = ThreadCpuTime() - cpu0;
    const auto sw1 = ContextSwitches();
    histogram_.With({what}).Observe(took);
    ++handled_;
    if (took > longest_) {
      longest_ = took;
      longest_what_ = what;
    }
    if (cpu > longest_cpu_) {
      longest_cpu_ = cpu;
      longest_cpu_what_ = what;
    }
    if (took > std::chrono::milliseconds(1)) {
      // Waits (blocked on a lock or a call) and preemptions (the CPU given to another thread)
      // tell why the wall time exceeds the CPU time.
      log_.log(took > std::chrono::milliseconds(50) ? spdlog::level::warn : spdlog::level::debug,
               "owner loop: {} took {:.1f} ms (cpu {:.1f} ms, {} waits, {} preemptions)", what,
               Ms(took), Ms(cpu), sw1.first - sw0.first, sw1.second - sw0.second);
    }
  }
  void Report() const {
    log_.info("owner loop: {} handlers, longest {:.2f} ms ({}), longest on the CPU {:.2f} ms ({})",
              handled_, Ms(longest_), longest_what_.empty() ? "none" : longest_what_,
              Ms(longest_cpu_), longest_cpu_what_.empty() ? "none" : longest_cpu_what_);
  }

 private:
  static double Ms(std::chrono::nanoseconds d) {
    return std::chrono::duration<double, std::milli>(d).count();
  }
  // Not getrusage's user and system times: their sum is not exact per call (a handler of 2.6 ms
  // showed 5.2 ms of CPU).
  static std::chrono::nanoseconds ThreadCpuTime() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
  }
  static std::pair<long, long> ContextSwitches() {
    rusage ru{};
    ::getrusage(RUSAGE_THREAD, &ru);
    return {ru.ru_nvcsw, ru.ru_nivcsw};
  }
  spdlog::logger& log_;
  metrics::Family<metrics::DurationHistogram>& histogram_;
  uint64_t handled_ = 0;
  SteadyTime::duration longest_{};
  std::string longest_what_;
  std::chrono::nanoseconds longest_cpu_{};
  std::string longest_cpu_what_;
};

// Handles one batch of plugin-directory events. A kubelet restart shows as "our sockets and
// kubelet.sock deleted, kubelet.sock created".
agent::PluginDirEvents ReadPluginDirEvents(int fd) {
  agent::PluginDirEvents out;
  alignas(inotify_event) char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) {
    for (char* p = buf; p < buf + n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(p);
      const std::string name = ev->len ? ev->name : "";
      if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && name == "kubelet.sock") {
        out.kubelet_created = true;
      } else if ((ev->mask & (IN_DELETE | IN_MOVED_FROM)) && name != "kubelet.sock") {
        out.deleted.push_back(name);
      }
      p += sizeof(inotify_event) + ev->len;
    }
  }
  return out;
}

class Daemon {
 public:
  Daemon(DaemonFlags flags, HostRoots roots, std::optional<IdDatabase> ids)
      : flags_(std::move(flags)),
        roots_(std::move(roots)),
        ids_(std::move(ids)),
        log_(MakeLogger("daemon")),
        plugin_log_(MakeLogger("plugin")),
        hook_ctx_{roots_.sysfs,
                  roots_.dev,
                  flags_.vm_uid,
                  *plugin_log_,
                  [post = Poster(), this](std::vector<std::string> ids) {
                    post([this, ids = std::move(ids)] { reconciler_->OnAllocated(ids); });
                  },
                  [m = &metrics_](const plugin::Resource&, std::chrono::nanoseconds took, bool ok) {
                    m->allocate.Observe(took);
                    m->allocations.With({ok ? "granted" : "refused"}).Add();
                  }},
        manager_(
            {.plugin_dir = flags_.plugin_dir,
             .hooks = agent::MakePluginHooks(hook_ctx_),
             .registered =
                 [m = &metrics_](bool ok) { m->registrations.With({ok ? "ok" : "error"}).Add(); }},
            Poster(), *plugin_log_),
        sink_(manager_, health_changes_),
        pod_resources_(flags_.pod_resources_socket, Poster()),
        timer_(*log_, metrics_.loop_handler) {
    if (auto db = IdDatabase::LoadFirst(DefaultUsbIdsPaths()); db.ok()) usb_ids_ = *std::move(db);
  }

  ~Daemon() {
    // Scrapes and probes end first (they read the projection and post to the loop), then
    // claims, then the kernel jobs (their waits cancelled), then the plugins.
    metrics_server_.reset();
    control_.reset();
    // The kubelet's DRA calls end (those waiting for the loop give up), then the servers.
    if (dra_driver_) dra_driver_->Stop();
    dra_plugin_.reset();
    dra_driver_.reset();
    if (reconciler_) reconciler_->set_publisher(nullptr);
    inventory_metrics_.set_next(nullptr);
    publisher_.reset();
    projection_.reset();
    binder_.reset();
  }

  int Run() {
    const sigset_t mask = DaemonSignals();
    UniqueFd sig(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    UniqueFd watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!sig.valid() || !watch.valid() ||
        ::inotify_add_watch(watch.get(), flags_.plugin_dir.c_str(),
                            IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM) < 0) {
      log_->error("{}: cannot watch: {}", flags_.plugin_dir, std::strerror(errno));
      return 1;
    }
    auto config = LoadConfig();
    if (!config) return 1;
    dra_wanted_ = !config->dra.empty();
    PrioritizeOwner();
    // Before anything is touched or served: a port in use fails the start cleanly. Probes wait
    // for the loop, which turns once the start-up below is done.
    if (!StartMetrics()) return 1;
    auto store = vfio::StateStore::Open(flags_.state_dir);
    if (!store.ok()) {
      log_->error("state: {}", ToStd(store.status().message()));
      return 1;
    }
    binder_ = std::make_unique<agent::KernelBinder>(
        vfio::Node{roots_.sysfs, roots_.dev,
                   [modprobe = flags_.modprobe] { return LoadVfioModule(modprobe); },
                   [this](std::string_view rel, std::string_view value) {
                     return roots_.sysfs.WriteFile(rel, value);
                   },
                   nullptr, *log_, vfio::kProbeWait, &roots_.proc},
        *std::move(store), Poster(),
        [m = &metrics_](std::chrono::nanoseconds took) { m->kernel_jobs.Observe(took); });
    // Listen before the first scan so that no device plugged meanwhile is missed.
    auto monitor = udev::DeviceMonitor::Open(flags_.uevent_source);
    if (monitor.ok()) {
      monitor_ = *std::move(monitor);
    } else {
      log_->error("hotplug disabled: {}", ToStd(monitor.status().message()));
    }
    reconciler_ = std::make_unique<agent::Reconciler>(
        agent::ReconcilerOptions{flags_.node, roots_.sysfs, roots_.dev, roots_.proc,
                                 ids_ ? &*ids_ : nullptr, usb_ids_ ? &*usb_ids_ : nullptr},
        agent::ReconcilerPorts{*binder_, sink_, pod_resources_, clock_, *log_});
    // The metrics see every inventory; the projection, once started, the same ones after them.
    reconciler_->set_publisher(&inventory_metrics_);
    // Intents first (DESIGN.md): the projection, and with it claims, start once they are
    // brought about; plugins for devices already on vfio-pci are served meanwhile.
    bool projection_failed = false;
    if (!reconciler_->Start(*std::move(config), [this, &projection_failed] {
          intents_done_ = true;
          if (!StartProjection()) projection_failed = true;
        })) {
      return 1;
    }
    auto control =
        ControlServer::Start(ControlSocketPath(flags_.state_dir),
                             [this, post = Poster()](std::string line, ControlServer::Reply reply) {
                               post([this, line = std::move(line), reply = std::move(reply)] {
                                 reconciler_->OnControl(line, reply);
                               });
                             });
    if (!control.ok()) {
      log_->error("control socket: {}", ToStd(control.status().message()));
      return 1;
    }
    control_ = *std::move(control);
    log_->info("daemon started on node {}: {} plugins", flags_.node, manager_.size());
    for (;;) {
      if (projection_failed) return 1;
      pollfd fds[] = {{sig.get(), POLLIN, 0},
                      {watch.get(), POLLIN, 0},
                      {queue_->fd(), POLLIN, 0},
                      {monitor_ ? monitor_->fd() : -1, POLLIN, 0}};
      // No timers unless a registration retry or a PodResources poll is due.
      std::optional<SteadyTime::duration> wake = manager_.NextWake();
      if (auto due = reconciler_->NextWake()) {
        const auto until = std::max(SteadyTime::duration::zero(), *due - clock_.Now());
        wake = wake ? std::min(*wake, until) : until;
      }
      int timeout = -1;
      if (wake) {
        timeout = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(*wake).count());
      }
      if (::poll(fds, 4, timeout) < 0 && errno != EINTR) {
        log_->error("poll: {}", std::strerror(errno));
        return 1;
      }
      if (fds[0].revents & POLLIN) {
        signalfd_siginfo info;
        while (::read(sig.get(), &info, sizeof info) == sizeof info) {
          if (info.ssi_signo == SIGHUP) {
            log_->info("SIGHUP: reloading {}", flags_.config);
            if (auto c = LoadConfig()) {
              if (!c->dra.empty() && !dra_wanted_) {
                log_->warn(
                    "config: dra: the DRA driver starts with the agent; restart it to "
                    "serve these devices through DRA");
              }
              timer_.Run("config", [&] { reconciler_->OnConfig(*std::move(c)); });
            }
          } else {
            log_->info("signal {}: stopping", info.ssi_signo);
            timer_.Report();
            return 0;
          }
        }
      }
      if (fds[1].revents & POLLIN) {
        auto events = ReadPluginDirEvents(watch.get());
        if (events.kubelet_created) {
          metrics_.kubelet_restarts.Add();
          if (dra_plugin_) dra_plugin_->Check();  // a kubelet restart may have wiped it
        }
        timer_.Run("plugin dir", [&] { reconciler_->OnPluginDir(events); });
      }
      if (fds[2].revents & POLLIN) {
        timer_.Run("posted", [&] { queue_->RunPending(kPostedSlice); });
      }
      if (fds[3].revents & POLLIN) {
        auto events = monitor_->Receive();
        metrics_.uevents.Add(events.size());
        timer_.Run("uevents", [&] { reconciler_->OnUevents(events); });
      }
      timer_.Run("registration retries", [&] { manager_.RunDue(); });
      timer_.Run("re-plan and timers", [&] { reconciler_->RunDue(); });
    }
  }

 private:
  // The config file, or {} without one; nullopt when it is broken (the caller keeps the old).
  std::optional<agent::DaemonConfig> LoadConfig() {
    if (flags_.config.empty()) return agent::DaemonConfig{};
    auto config = agent::LoadConfig(flags_.config);
    if (!config.ok()) {
      log_->error("config: {}", ToStd(config.status().message()));
      return std::nullopt;
    }
    return *std::move(config);
  }

  // --kubeconfig, else the in-cluster service account, else standalone (no projection).
  bool StartProjection() {
    absl::StatusOr<projection::KubeConfig> config =
        flags_.kubeconfig.empty() ? projection::InClusterConfig(::getenv, ServiceAccountDir())
                                  : projection::LoadKubeconfig(flags_.kubeconfig);
    if (!config.ok()) {
      if (flags_.kubeconfig.empty() && absl::IsNotFound(config.status())) {
        log_->info("standalone: no --kubeconfig and not in a cluster");
        if (dra_wanted_) {
          log_->error("dra: not served: the driver reads ResourceClaims from the API server");
        }
        return true;
      }
      log_->error("{}", ToStd(config.status().message()));
      return false;
    }
    config->observe = [m = &metrics_](std::string_view verb, int status) {
      m->api_requests.With({std::string(verb), absl::StrCat(status)}).Add();
    };
    // Claims, SR-IOV and vGPU requests are decided on the owner thread like everything that touches
    // devices; the answer goes back to the projection's thread.
    auto claims = [this, post = Poster()](projection::ClaimRequest req,
                                          std::function<void(projection::ClaimOutcome)> done) {
      post([this, req = std::move(req), done = std::move(done)]() mutable {
        reconciler_->OnClaim(std::move(req), std::move(done));
      });
    };
    auto sriov = [this, post = Poster()](projection::VfRequest req,
                                         std::function<void(projection::VfOutcome)> done) {
      post([this, req = std::move(req), done = std::move(done)]() mutable {
        reconciler_->OnSriov(std::move(req), std::move(done));
      });
    };
    auto vgpu = [this, post = Poster()](projection::VgpuRequest req,
                                        std::function<void(projection::VgpuOutcome)> done) {
      post([this, req = std::move(req), done = std::move(done)]() mutable {
        reconciler_->OnVgpu(std::move(req), std::move(done));
      });
    };
    auto p = projection::Projection::Start(*config, flags_.node, MakeLogger("projection"), claims,
                                           sriov, vgpu, dra_wanted_);
    if (!p.ok()) {
      log_->error("{}", ToStd(p.status().message()));
      return false;
    }
    projection_ = *std::move(p);
    publisher_ = std::make_unique<ProjectionPublisher>(*projection_);
    AddProjectionCollectors(metrics_.registry, *projection_);
    inventory_metrics_.set_next(publisher_.get());
    reconciler_->set_publisher(&inventory_metrics_);  // publishes again, to both
    return !dra_wanted_ || StartDra(*config);
  }

  // The DRA driver (the config's `dra`): its calls are decided on the owner thread like
  // everything that touches devices; the answer goes back to the kubelet's gRPC call.
  bool StartDra(const projection::KubeConfig& config) {
    auto client = projection::KubeClient::Create(config);
    if (!client.ok()) {
      log_->error("dra: {}", ToStd(client.status().message()));
      return false;
    }
    dra::DeviceOwner owner{
        [this, post = Poster()](dra::PrepareRequest req,
                                std::function<void(dra::PrepareAnswer)> done) {
          post([this, req = std::move(req), done = std::move(done)]() mutable {
            reconciler_->OnDraPrepare(std::move(req), std::move(done));
          });
        },
        [this, post = Poster()](dra::UnprepareRequest req, std::function<void(std::string)> done) {
          post([this, req = std::move(req), done = std::move(done)]() mutable {
            reconciler_->OnDraUnprepare(std::move(req), std::move(done));
          });
        }};
    const std::string plugin_dir = absl::StrCat(flags_.kubelet_dir, "/plugins/", kDraDriverName);
    dra_log_ = MakeLogger("dra");
    auto driver = dra::Driver::Create({flags_.node, flags_.cdi_dir, plugin_dir}, *std::move(client),
                                      std::move(owner), *dra_log_);
    if (!driver.ok()) {
      log_->error("dra: {}", ToStd(driver.status().message()));
      return false;
    }
    dra_driver_ = *std::move(driver);
    reconciler_->SweepDra(dra_driver_->PreparedDevices());
    auto plugin = dra::KubeletPlugin::Start({flags_.kubelet_dir + "/plugins_registry", plugin_dir},
                                            *dra_driver_, *dra_log_);
    if (!plugin.ok()) {
      log_->error("{}", ToStd(plugin.status().message()));
      return false;
    }
    dra_plugin_ = *std::move(plugin);
    return true;
  }

  // The owner thread goes first for the CPU: its handlers are short, but on a busy node each would
  // otherwise wait its turn behind gRPC's threads (64 or more) and the kubelet, and a handler of
  // 2 ms on the CPU took 20 ms. Threads it starts from now on begin at nice 0. Without
  // CAP_SYS_NICE the daemon runs as before.
  void PrioritizeOwner() {
    constexpr int kOwnerNice = -10;
    if (absl::Status st = PrioritizeThisThread(kOwnerNice); st.ok()) {
      log_->info("owner loop: nice {} (threads it starts: 0)", kOwnerNice);
    } else {
      log_->info("owner loop: priority unchanged: {}", ToStd(st.message()));
    }
  }

  // --metrics-bind-address: /metrics, /healthz, /readyz; "0" = none. False when it cannot listen.
  bool StartMetrics() {
    if (flags_.metrics_bind_address == "0") return true;
    auto address = ParseBindAddress(flags_.metrics_bind_address);
    if (!address.ok()) {
      log_->error("{}", ToStd(address.status().message()));
      return false;
    }
    MetricsHandlers handlers;
    handlers.metrics = [this] { return metrics_.registry.Render(); };
    // Alive: the owner loop runs a posted no-op within the probe's wait.
    handlers.healthz = [this] { return AskOwner([](ProbeResult& r) { r.ok = true; }); };
    // Ready: every plugin registered with the kubelet, and the projection (when there is one)
    // has listed this node's resources.
    handlers.readyz = [this] {
      return AskOwner([this](ProbeResult& r) {
        std::vector<std::string> why;
        if (manager_.registered() < manager_.size()) {
          why.push_back(absl::StrCat(manager_.size() - manager_.registered(), " of ",
                                     manager_.size(), " device plugins not registered"));
        }
        if (projection_) {
          for (const std::string& plural : projection_->Unsynced()) {
            why.push_back(absl::StrCat(plural, " not listed yet"));
          }
        } else if (!intents_done_) {
          why.push_back("intents not brought about yet");
        }
        r.ok = why.empty();
        r.message = absl::StrJoin(why, "; ");
      });
    };
    auto server = MetricsServer::Start(*address, std::move(handlers));
    if (!server.ok()) {
      log_->error("{}", ToStd(server.status().message()));
      return false;
    }
    metrics_server_ = *std::move(server);
    log_->info("metrics on {}:{} (/metrics, /healthz, /readyz)", address->host,
               metrics_server_->port());
    return true;
  }

  // Runs `fill` on the owner thread and waits for it at most 2 s (the probe's answer then says
  // the loop is stuck). Scraper's thread.
  ProbeResult AskOwner(std::function<void(ProbeResult&)> fill) {
    auto answer = std::make_shared<std::promise<ProbeResult>>();
    std::future<ProbeResult> got = answer->get_future();
    Poster()([answer, fill = std::move(fill)] {
      ProbeResult r;
      fill(r);
      answer->set_value(std::move(r));
    });
    if (got.wait_for(std::chrono::seconds(2)) != std::future_status::ready) {
      return {false, "the owner loop did not turn within 2 s"};
    }
    return got.get();
  }

  // A function that runs its argument on the owner thread, for callbacks on other threads. It
  // holds the queue weakly: a call finishing after the daemon is gone posts nothing.
  agent::Post Poster() {
    return [queue = std::weak_ptr<EventQueue>(queue_)](std::function<void()> fn) {
      if (auto q = queue.lock()) q->Post(std::move(fn));
    };
  }

  DaemonFlags flags_;
  HostRoots roots_;
  std::optional<IdDatabase> ids_;
  std::optional<IdDatabase> usb_ids_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<spdlog::logger> plugin_log_;
  // Shared, and held weakly by callbacks (Poster): gRPC calls can outlive the daemon.
  std::shared_ptr<EventQueue> queue_ = std::make_shared<EventQueue>();
  SteadyClock clock_;
  DaemonMetrics metrics_;  // before the parts that update it
  InventoryMetrics inventory_metrics_{metrics_.registry};
  HealthChanges health_changes_{metrics_.health_changes};
  agent::HookContext hook_ctx_;    // read by the plugin servers' hooks
  plugin::PluginManager manager_;  // its servers' hooks use hook_ctx_
  ManagerSink sink_;
  KubeletPodResources pod_resources_;
  LoopTimer timer_;
  std::unique_ptr<agent::KernelBinder> binder_;
  std::unique_ptr<udev::DeviceMonitor> monitor_;
  std::unique_ptr<agent::Reconciler> reconciler_;
  std::unique_ptr<projection::Projection> projection_;  // absent when standalone
  std::unique_ptr<ProjectionPublisher> publisher_;
  std::unique_ptr<ControlServer> control_;         // `pcidevices enable|disable` while we run
  std::unique_ptr<MetricsServer> metrics_server_;  // reset first by the destructor
  bool intents_done_ = false;                      // the reconciler's Start said ready
  bool dra_wanted_ = false;                        // the config at start has `dra` selectors
  std::shared_ptr<spdlog::logger> dra_log_;
  std::unique_ptr<dra::Driver> dra_driver_;
  std::unique_ptr<dra::KubeletPlugin> dra_plugin_;
};

}  // namespace

int RunDaemonLoop(DaemonFlags flags, HostRoots roots, std::optional<IdDatabase> ids) {
  // Blocked before any thread exists (gRPC starts threads as soon as the plugin manager is
  // built): threads inherit the mask, so these signals reach only the signalfd.
  const sigset_t mask = DaemonSignals();
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  // A peer that closed its connection (the API server, a TLS shutdown) is an error return, never
  // a process-killing SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  // One malloc arena: each plugin's queue thread would otherwise get an arena of its own (glibc
  // allows 8 per core), megabytes of resident memory for a few small messages a minute.
  ::mallopt(M_ARENA_MAX, 1);
  Daemon daemon(std::move(flags), std::move(roots), std::move(ids));
  return daemon.Run();
}

}  // namespace pcid::cmd
