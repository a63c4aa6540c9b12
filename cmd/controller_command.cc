#include "cmd/controller_command.h"

#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <absl/time/time.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include "cmd/flags.h"
#include "cmd/logging.h"
#include "cmd/metrics_server.h"
#include "controller/cluster.h"
#include "controller/leader_election.h"
#include "controller/node_cleanup.h"
#include "controller/serving_certificate.h"
#include "controller/validate.h"
#include "controller/vm_mutation.h"
#include "controller/webhook_server.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "core/status.h"
#include "projection/events.h"
#include "projection/informer.h"
#include "projection/kube_client.h"
#include "projection/kubeconfig.h"

namespace pcid::cmd {
namespace {

constexpr char kUsage[] =
    "usage: pcidevices controller [--kubeconfig FILE] [--webhook-bind-address ADDR:PORT|0]\n"
    "         [--tls-cert-file FILE --tls-private-key-file FILE]\n"
    "         [--leader-elect=true|false] [--leader-election-namespace NS]\n"
    "         [--leader-election-id NAME] [--leader-elect-lease-duration 15s]\n"
    "         [--leader-elect-renew-deadline 10s] [--leader-elect-retry-period 2s]\n"
    "         [--metrics-bind-address ADDR:PORT|0]\n";

std::string ServiceAccountDir() {
  const char* dir = ::getenv("PCIDEVICES_SERVICE_ACCOUNT_DIR");
  return dir && *dir ? dir : "/var/run/secrets/kubernetes.io/serviceaccount";
}

// The pod's namespace: POD_NAMESPACE, else the service account's, else the manifests' default.
std::string OwnNamespace() {
  if (const char* ns = ::getenv("POD_NAMESPACE"); ns && *ns) return ns;
  std::ifstream in(ServiceAccountDir() + "/namespace");
  std::string ns;
  if (in >> ns && !ns.empty()) return ns;
  return "pcidevices-system";
}

// POD_NAME (unique in the cluster), else host name and process id.
std::string Identity() {
  if (const char* pod = ::getenv("POD_NAME"); pod && *pod) return pod;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return absl::StrCat(host, "_", ::getpid());
}

absl::StatusOr<std::chrono::milliseconds> Duration(const ParsedFlags& flags, const char* name,
                                                   std::chrono::milliseconds fallback) {
  if (!flags.Has(name)) return fallback;
  absl::Duration d;
  if (!absl::ParseDuration(flags.Get(name, ""), &d) || d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " \"", flags.Get(name, ""),
                                                   "\" is not a positive duration (e.g. 15s)"));
  }
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

sigset_t StopSignals() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  return mask;
}

}  // namespace

int RunController(const std::vector<std::string>& args) {
  auto cmdline = ParseCommandLine(
      "controller", args,
      {"kubeconfig", "webhook-bind-address", "tls-cert-file", "tls-private-key-file",
       "leader-elect", "leader-election-namespace", "leader-election-id",
       "leader-elect-lease-duration", "leader-elect-renew-deadline", "leader-elect-retry-period",
       "metrics-bind-address"},
      {}, kUsage);
  if (!cmdline.flags) return cmdline.code;
  const ParsedFlags& flags = *cmdline.flags;
  auto usage_error = [](const std::string& why) {
    std::cerr << "pcidevices controller: " << why << "\n" << kUsage;
    return 2;
  };
  const std::string elect = flags.Get("leader-elect", "true");
  if (elect != "true" && elect != "false") {
    return usage_error("--leader-elect must be true or false");
  }
  const std::string webhook_address = flags.Get("webhook-bind-address", ":8443");
  std::optional<BindAddress> webhook_bind;
  if (webhook_address != "0") {
    auto bind = ParseBindAddress(webhook_address);
    if (!bind.ok()) return usage_error(std::string(ToStd(bind.status().message())));
    if (!flags.Has("tls-cert-file") || !flags.Has("tls-private-key-file")) {
      return usage_error(
          "the webhooks need --tls-cert-file and --tls-private-key-file (or "
          "--webhook-bind-address 0)");
    }
    webhook_bind = *bind;
  }
  const std::string metrics_address = flags.Get("metrics-bind-address", ":9809");
  std::optional<BindAddress> metrics_bind;
  if (metrics_address != "0") {
    auto bind = ParseBindAddress(metrics_address);
    if (!bind.ok()) return usage_error(std::string(ToStd(bind.status().message())));
    metrics_bind = *bind;
  }
  controller::LeaseConfig lease;
  lease.ns = flags.Get("leader-election-namespace", OwnNamespace());
  lease.name = flags.Get("leader-election-id", lease.name);
  lease.identity = Identity();
  for (auto [name, field] : {std::pair{"leader-elect-lease-duration", &lease.lease_duration},
                             {"leader-elect-renew-deadline", &lease.renew_deadline},
                             {"leader-elect-retry-period", &lease.retry_period}}) {
    auto d = Duration(flags, name, *field);
    if (!d.ok()) return usage_error(std::string(ToStd(d.status().message())));
    *field = *d;
  }
  if (absl::Status s = controller::CheckLeaseConfig(lease); !s.ok()) {
    return usage_error(std::string(ToStd(s.message())));
  }

  auto log = MakeLogger("controller");
  absl::StatusOr<projection::KubeConfig> config =
      flags.Has("kubeconfig") ? projection::LoadKubeconfig(flags.Get("kubeconfig", ""))
                              : projection::InClusterConfig(::getenv, ServiceAccountDir());
  if (!config.ok()) {
    log->error("{}", ToStd(config.status().message()));
    return 1;
  }

  // Signals are taken by sigwait on this thread; every other thread inherits the block.
  const sigset_t stop_signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  metrics::Registry registry;
  auto& reviews =
      registry.AddCounter("pcidevices_controller_admission_reviews_total",
                          "AdmissionReviews answered, by path and verdict", {"path", "allowed"});
  auto& review_seconds = registry.AddHistogram(
      "pcidevices_controller_admission_review_duration_seconds",
      "Time to answer an AdmissionReview", {"path"}, metrics::LatencyBuckets());
  auto& leader_gauge =
      registry.AddGauge("pcidevices_controller_leader", "1 while this replica holds the lease", {});
  auto& cleanup_writes = registry.AddCounter("pcidevices_controller_node_cleanup_writes_total",
                                             "Writes made cleaning up after deleted nodes", {});

  controller::ClusterStores cluster;
  projection::Shutdown shutdown;
  std::vector<std::thread> threads;
  for (auto& [store, resource] : cluster.Watched()) {
    threads.emplace_back([&, store = store, resource = resource] {
      projection::Informer informer(
          resource, *store, [](projection::Message) {}, shutdown, *log);
      informer.Run(*config);
    });
  }

  // A start-up failure: the informers are stopped and joined before the exit.
  auto fail = [&](const absl::Status& why) {
    log->error("{}", ToStd(why.message()));
    shutdown.Stop();
    for (auto& t : threads) t.join();
    return 1;
  };
  std::unique_ptr<controller::ServingCertificate> certificate;
  std::unique_ptr<controller::WebhookServer> webhooks;
  // Claims for IOMMU group-mates are created from webhook threads: one client, one at a time.
  std::mutex claim_client_mu;
  std::unique_ptr<projection::KubeClient> claim_client;
  const controller::ValidationPolicy policy{
      absl::StrCat("system:serviceaccount:", OwnNamespace(), ":")};
  if (webhook_bind) {
    auto cert = controller::ServingCertificate::Load(flags.Get("tls-cert-file", ""),
                                                     flags.Get("tls-private-key-file", ""), *log);
    if (!cert.ok()) return fail(cert.status());
    certificate = *std::move(cert);
    controller::WebhookHandlers handlers;
    handlers.validate = [&](const controller::AdmissionRequest& r) {
      return controller::Validate(r, cluster, policy);
    };
    handlers.mutate = [&](const controller::AdmissionRequest& r) {
      // A VM the validating webhook will refuse gets no claims made for it: the mutator's side
      // effect must not outlive a request that fails.
      if (!controller::Validate(r, cluster, policy).allowed) return controller::Allow();
      controller::VmMutation m = controller::PlanVmMutation(r, cluster);
      if (r.dry_run || m.claims.empty()) return m.verdict;
      std::lock_guard<std::mutex> lock(claim_client_mu);
      if (!claim_client) {
        auto client = projection::KubeClient::Create(*config);
        if (!client.ok())
          return controller::Unavailable(std::string(ToStd(client.status().message())));
        claim_client = *std::move(client);
      }
      for (const controller::GroupMateClaim& c : m.claims) {
        auto res =
            claim_client->Call("POST", absl::StrCat(controller::kDevicesPrefix, "pcideviceclaims"),
                               controller::GroupMateClaimJson(c));
        if (res.ok() && (res->status == 201 || res->status == 409)) {
          log->info("mutate: claimed IOMMU group-mate {} ({}) for {}", c.name, c.address, r.name);
          continue;
        }
        return controller::Unavailable(absl::StrCat(
            "error creating PCIDeviceClaim ", c.name, " for an IOMMU group-mate of VM ", r.ns, "/",
            r.name, ": ",
            res.ok()
                ? absl::StrCat("HTTP ", res->status, ": ", projection::StatusMessage(res->body))
                : std::string(ToStd(res.status().message()))));
      }
      return m.verdict;
    };
    handlers.observe = [&](std::string_view path, bool allowed, std::chrono::nanoseconds took) {
      reviews.With({std::string(path), allowed ? "true" : "false"}).Add();
      review_seconds.With({std::string(path)}).Observe(took);
    };
    auto server = controller::WebhookServer::Start(webhook_bind->host, webhook_bind->port,
                                                   *certificate, std::move(handlers), *log);
    if (!server.ok()) return fail(server.status());
    webhooks = *std::move(server);
    log->info("webhooks: serving /validate and /mutate on port {}", webhooks->port());
  }

  std::atomic<bool> leading{false};
  std::unique_ptr<MetricsServer> metrics_server;
  if (metrics_bind) {
    MetricsHandlers h;
    h.metrics = [&] { return registry.Render(); };
    h.healthz = [] { return ProbeResult{true, "ok"}; };
    h.readyz = [&] {
      std::vector<std::string> unsynced = cluster.Unsynced();
      if (unsynced.empty()) return ProbeResult{true, "ok"};
      return ProbeResult{false, absl::StrCat("not listed yet: ", absl::StrJoin(unsynced, ", "))};
    };
    auto server = MetricsServer::Start(*metrics_bind, std::move(h));
    if (!server.ok()) return fail(server.status());
    metrics_server = *std::move(server);
  }

  // The leader's work: node cleanup, a pass every second (each plans from the stores).
  SteadyClock clock;
  std::atomic<bool> lost{false};
  auto lead = [&] {
    auto client = projection::KubeClient::Create(*config);
    if (!client.ok()) {
      log->error("{}", ToStd(client.status().message()));
      return;
    }
    if (!shutdown.Enlist(client->get())) return;
    projection::EventRecorder events({"pcidevices.io/controller", lease.identity,
                                      std::chrono::seconds(360), std::chrono::seconds(30)},
                                     clock, *log);
    controller::NodeCleanup cleanup(cluster, **client, events, *log);
    while (!shutdown.stopping() && !lost) {
      if (leading) cleanup_writes.With().Add(static_cast<uint64_t>(cleanup.Pass()));
      if (!shutdown.SleepFor(std::chrono::milliseconds(1000))) break;
    }
    shutdown.Unlist(client->get());
  };
  std::thread elector_thread;
  std::thread leader_thread;
  if (elect == "true") {
    elector_thread = std::thread([&] {
      auto client = projection::KubeClient::Create(*config);
      if (!client.ok()) {
        log->error("{}", ToStd(client.status().message()));
        return;
      }
      controller::LeaderElector elector(lease, **client, clock, *log);
      const bool ended_well = elector.Run(shutdown, [&] {
        leading = true;
        leader_gauge.With().Set(1);
      });
      leading = false;
      leader_gauge.With().Set(0);
      if (!ended_well) {
        lost = true;
        ::kill(::getpid(), SIGTERM);  // leadership lost: stop, as client-go's users do
      }
    });
  } else {
    leading = true;
    leader_gauge.With().Set(1);
  }
  leader_thread = std::thread(lead);

  int signal = 0;
  sigwait(&stop_signals, &signal);
  log->info("controller: stopping ({})", lost ? "leadership lost" : strsignal(signal));
  webhooks.reset();
  shutdown.Stop();  // the elector releases the lease on its way out
  if (elector_thread.joinable()) elector_thread.join();
  leader_thread.join();
  for (auto& t : threads) t.join();
  metrics_server.reset();
  return lost ? 1 : 0;
}

}  // namespace pcid::cmd
