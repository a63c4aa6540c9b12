// File: projection/kube_client.h
//
// One connection to the Kubernetes API server (cpp-httplib over OpenSSL): plain calls and
// streamed watches, bearer token (re-read from its file when it changes) or client certificate,
// the server's certificate always verified against the kubeconfig's CA. Not thread-safe: each
// thread that talks to the API server owns its client; Stop() alone may be called from another
// thread, to end a watch. httplib never leaves this module.
#pragma once

#include <absl/status/statusor.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "projection/kubeconfig.h"

namespace httplib {
class ClientImpl;
class SSLClient;
enum class Error;
}  // namespace httplib

namespace pcid::projection {

struct KubeResponse {
  int status = 0;  // HTTP status
  std::string body;
};

// Plain API calls, what the controllers write through: KubeClient on the wire, a fake in unit
// tests. One caller per thread.
class KubeCaller {
 public:
  virtual ~KubeCaller() = default;
  // One request. Transport failures are a Status; any HTTP answer is a KubeResponse.
  virtual absl::StatusOr<KubeResponse> Call(std::string_view method, const std::string& path,
                                            const std::string& body,
                                            const std::string& content_type) = 0;
  absl::StatusOr<KubeResponse> Call(std::string_view method, const std::string& path) {
    return Call(method, path, "", "application/json");
  }
  absl::StatusOr<KubeResponse> Call(std::string_view method, const std::string& path,
                                    const std::string& body) {
    return Call(method, path, body, "application/json");
  }
};

class KubeClient final : public KubeCaller {
 public:
  // InvalidArgument for unusable certificates or keys.
  static absl::StatusOr<std::unique_ptr<KubeClient>> Create(const KubeConfig& config);
  ~KubeClient() override;

  // One request. Transport failures (connection refused, TLS, timeout) are Unavailable naming the
  // server; any HTTP answer, 4xx and 5xx included, is a KubeResponse. Bodies over 8 MiB are
  // refused (ResourceExhausted).
  absl::StatusOr<KubeResponse> Call(std::string_view method, const std::string& path,
                                    const std::string& body,
                                    const std::string& content_type) override;
  using KubeCaller::Call;

  // A watch: GET `path` and hand every complete line to `on_line` until the server ends the
  // stream, `on_line` returns false, or Stop() is called. Returns the HTTP status (a 2xx for a
  // stream that ended); lines over 8 MiB end it with ResourceExhausted.
  absl::StatusOr<int> Stream(const std::string& path,
                             const std::function<bool(std::string_view line)>& on_line);

  // Ends a Call() or Stream() in progress and refuses later ones (Cancelled); any thread. A
  // request that was starting just then may still open its connection: call Stop() again until
  // the thread using this client is done (Projection does).
  void Stop();

  const std::string& server() const { return server_; }

 private:
  KubeClient() = default;
  std::string Token();
  // A failed request's cause; for TLS, why the server's certificate was refused.
  std::string TransportError(httplib::Error err) const;

  KubeConfig config_;
  std::string server_;  // "https://10.0.0.1:6443", for messages
  std::unique_ptr<httplib::ClientImpl> http_;
  httplib::SSLClient* tls_ = nullptr;  // http_, when it is HTTPS
  std::string token_;                  // last read from token_file
  // Which file token_ was read from: a rotation changes the inode (or the mtime, or the size).
  struct TokenFileId {
    int64_t mtime_ns = -1;
    uint64_t inode = 0, device = 0;
    int64_t size = -1;
    friend bool operator==(const TokenFileId&, const TokenFileId&) = default;
  };
  TokenFileId token_id_;
  std::atomic<bool> stopped_{false};
};

}  // namespace pcid::projection
