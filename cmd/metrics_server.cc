#include "cmd/metrics_server.h"

#include <absl/strings/numbers.h>
#include <absl/strings/str_cat.h>
#include <httplib.h>
#include <sys/socket.h>

#include <set>

namespace pcid::cmd {

absl::StatusOr<BindAddress> ParseBindAddress(const std::string& text) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-bind-address \"", text, "\": ", why, " (want HOST:PORT or :PORT)"));
  };
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return bad("no port");
  std::string host = text.substr(0, colon);
  const std::string digits = text.substr(colon + 1);
  int port = 0;
  if (digits.empty() || digits.size() > 5 ||
      digits.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(digits, &port) || port > 65535) {
    return bad("the port is not a number from 0 to 65535");
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find_first_of("[]:/ ") != std::string::npos) {
    return bad("malformed host");
  }
  return BindAddress{host.empty() ? "0.0.0.0" : host, port};
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const BindAddress& address,
                                                                    MetricsHandlers handlers) {
  std::unique_ptr<MetricsServer> m(new MetricsServer);
  m->server_ = std::make_unique<httplib::Server>();
  httplib::Server& s = *m->server_;
  // Two workers: a probe waiting for the owner thread never holds up a scrape.
  s.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // SO_REUSEADDR alone: httplib's default adds SO_REUSEPORT, with which a second daemon would
  // share the port (and the scrapes) instead of being refused.
  s.set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  s.set_tcp_nodelay(true);
  s.set_read_timeout(5, 0);
  s.set_write_timeout(5, 0);
  s.set_keep_alive_max_count(100);
  static const std::set<std::string> kPaths = {"/metrics", "/healthz", "/readyz"};
  s.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!kPaths.count(req.path)) {
      res.status = 404;
      res.set_content("not found: /metrics, /healthz and /readyz are served\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "GET" && req.method != "HEAD") {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content(absl::StrCat(req.method, " not allowed: GET only\n"), "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.Get("/metrics", [metrics = handlers.metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  for (const auto& [path, probe] :
       {std::pair{"/healthz", handlers.healthz}, std::pair{"/readyz", handlers.readyz}}) {
    s.Get(path, [probe = probe](const httplib::Request&, httplib::Response& res) {
      const ProbeResult r = probe();
      res.status = r.ok ? 200 : 503;
      res.set_content(r.ok ? "ok\n" : absl::StrCat(r.message, "\n"), "text/plain");
    });
  }
  if (address.port == 0) {
    m->port_ = s.bind_to_any_port(address.host);
  } else if (s.bind_to_port(address.host, address.port)) {
    m->port_ = address.port;
  }
  if (m->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", address.host, ":",
                                               address.port, " (in use, or no such address)"));
  }
  m->thread_ = std::thread([&s] { s.listen_after_bind(); });
  return m;
}

MetricsServer::~MetricsServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace pcid::cmd
