// File: cmd/metrics_server.h
//
// The daemon's observability endpoint (`--metrics-bind-address`, default `:9808`, `0` = off):
// GET /metrics (the Prometheus text format), /healthz and /readyz (200 "ok", else 503 and the
// reason), for Prometheus and the DaemonSet's probes. Other paths 404, other methods 405. Served
// by two threads of its own (cpp-httplib): a scrape or a probe never runs on the owner thread;
// probes that need the owner thread's view post to it and wait, bounded.
#pragma once

#include <absl/status/statusor.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace pcid::cmd {

struct ProbeResult {
  bool ok = false;
  std::string message;  // why not, for the probe's log
};

struct MetricsHandlers {
  std::function<std::string()> metrics;
  std::function<ProbeResult()> healthz;
  std::function<ProbeResult()> readyz;
};

// "HOST:PORT", ":PORT" (every address) or "[V6]:PORT"; port 0 picks a free one.
struct BindAddress {
  std::string host;
  int port = 0;
};
// InvalidArgument naming `text` when it is none of those.
absl::StatusOr<BindAddress> ParseBindAddress(const std::string& text);

class MetricsServer {
 public:
  // Listens on `address` and serves on its own threads; an address in use is an error.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const BindAddress& address,
                                                              MetricsHandlers handlers);
  ~MetricsServer();  // stops listening, joins its threads
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace pcid::cmd
