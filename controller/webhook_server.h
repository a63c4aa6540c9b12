// File: controller/webhook_server.h
//
// The admission webhooks' HTTPS server (cpp-httplib over OpenSSL; never plain HTTP): POST
// `/validate` and `/mutate` take an admission.k8s.io/v1 AdmissionReview and answer one. What it
// refuses before any rule runs: another path (404) or method (405), a body that is not
// application/json (415), over 3 MiB (413, as the API server's own limit), or not an
// AdmissionReview v1 (400, naming the field); a client that stalls mid-request is cut off after
// the read timeout. Serves on threads of its own; the handlers run on them concurrently.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "controller/admission.h"
#include "controller/serving_certificate.h"

namespace httplib {
class SSLServer;
}
namespace spdlog {
class logger;
}

namespace pcid::controller {

inline constexpr size_t kMaxAdmissionReviewBytes = 3 * 1024 * 1024;

struct WebhookHandlers {
  std::function<AdmissionVerdict(const AdmissionRequest&)> validate;
  std::function<AdmissionVerdict(const AdmissionRequest&)> mutate;
  // Each review answered: which path, whether allowed, how long it took.
  std::function<void(std::string_view path, bool allowed, std::chrono::nanoseconds took)> observe;
};

class WebhookServer {
 public:
  // Listens on host:port (port 0 picks one); `certificate` outlives the server.
  static absl::StatusOr<std::unique_ptr<WebhookServer>> Start(
      const std::string& host, int port, ServingCertificate& certificate, WebhookHandlers handlers,
      spdlog::logger& log, std::chrono::seconds read_timeout = std::chrono::seconds(5));
  ~WebhookServer();  // stops listening, joins its threads
  int port() const { return port_; }

 private:
  WebhookServer() = default;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace pcid::controller
