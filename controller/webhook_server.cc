#include "controller/webhook_server.h"

#include <absl/strings/match.h>
#include <absl/strings/str_cat.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include "core/status.h"

namespace pcid::controller {
namespace {

// Enough for the API server's concurrent calls, so that one stalled client cannot hold them all.
constexpr size_t kThreads = 16;

void Review(const httplib::Request& req, httplib::Response& res, std::string_view path,
            const std::function<AdmissionVerdict(const AdmissionRequest&)>& handler,
            const WebhookHandlers& handlers, spdlog::logger& log) {
  const auto start = std::chrono::steady_clock::now();
  if (!absl::StartsWith(req.get_header_value("Content-Type"), "application/json")) {
    res.status = 415;
    res.set_content("AdmissionReview must be sent as application/json\n", "text/plain");
    return;
  }
  absl::StatusOr<AdmissionRequest> request = DecodeAdmissionReview(req.body);
  if (!request.ok()) {
    log.warn("{}: refused a request from {}: {}", path, req.remote_addr,
             ToStd(request.status().message()));
    res.status = 400;
    res.set_content(absl::StrCat(request.status().message(), "\n"), "text/plain");
    return;
  }
  AdmissionVerdict verdict = handler(*request);
  if (!verdict.allowed) {
    log.info("{}: denied {} {}/{}{}{} by {}: {}", path, request->operation, request->resource,
             request->ns, request->ns.empty() ? "" : "/", request->name, request->user,
             verdict.message);
  }
  res.set_content(EncodeAdmissionReview(request->uid, verdict), "application/json");
  if (handlers.observe) {
    handlers.observe(path, verdict.allowed, std::chrono::steady_clock::now() - start);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<WebhookServer>> WebhookServer::Start(
    const std::string& host, int port, ServingCertificate& certificate, WebhookHandlers handlers,
    spdlog::logger& log, std::chrono::seconds read_timeout) {
  std::unique_ptr<WebhookServer> s(new WebhookServer());
  s->server_ = std::make_unique<httplib::SSLServer>(
      [&certificate](SSL_CTX& ctx) { return certificate.Configure(ctx); });
  if (!s->server_->is_valid()) {
    return absl::InternalError("webhook server: cannot set up the TLS context");
  }
  httplib::SSLServer& server = *s->server_;
  server.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  server.set_payload_max_length(kMaxAdmissionReviewBytes);
  server.set_read_timeout(read_timeout);
  server.set_write_timeout(read_timeout);
  server.set_keep_alive_timeout(30);
  server.set_tcp_nodelay(true);  // an answer is one small write: no Nagle delay
  auto shared = std::make_shared<WebhookHandlers>(std::move(handlers));
  spdlog::logger* logger = &log;
  server.Post("/validate", [shared, logger](const httplib::Request& req, httplib::Response& res) {
    Review(req, res, "/validate", shared->validate, *shared, *logger);
  });
  server.Post("/mutate", [shared, logger](const httplib::Request& req, httplib::Response& res) {
    Review(req, res, "/mutate", shared->mutate, *shared, *logger);
  });
  for (const char* path : {"/validate", "/mutate"}) {
    auto refuse = [](const httplib::Request&, httplib::Response& res) {
      res.status = 405;
      res.set_header("Allow", "POST");
    };
    server.Get(path, refuse);
    server.Put(path, refuse);
    server.Delete(path, refuse);
    server.Patch(path, refuse);
  }
  const int bound =
      port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(
        absl::StrCat("webhook server: cannot listen on ", host, ":", port, " (in use?)"));
  }
  s->port_ = bound;
  s->thread_ = std::thread([&server] { server.listen_after_bind(); });
  return s;
}

WebhookServer::~WebhookServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace pcid::controller
