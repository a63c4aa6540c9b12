// File: projection/kubeconfig.h
//
// Where the API server is and how to authenticate: from a kubeconfig file (`--kubeconfig`) or
// the in-cluster service account. Supports what a DaemonSet or an operator's kubeconfig uses:
// bearer token (inline or a file re-read when it rotates), client certificate and key (inline or
// files), CA (inline or a file). TLS is always verified: `insecure-skip-tls-verify` is refused;
// plain http is accepted only for a loopback server (a `kubectl proxy`). exec and auth-provider
// plugins are refused with a clear error. Pure functions; any thread.
#pragma once

#include <absl/status/statusor.h>

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace pcid::projection {

struct KubeConfig {
  bool https = true;
  std::string host;  // "10.0.0.1", "api.example.com"
  int port = 443;
  std::string ca_pem;           // PEM bundle; empty = the system's trust store
  std::string token;            // inline bearer token
  std::string token_file;       // re-read when it changes (service-account tokens rotate)
  std::string client_cert_pem;  // with client_key_pem: TLS client authentication
  std::string client_key_pem;
  std::string origin;  // "kubeconfig /root/.kube/config (context kind)", for messages
  // Told of every request made through a KubeClient (its verb; the HTTP status, 0 when no
  // answer came), on the calling thread: the daemon's metrics (as client-go's WrapTransport).
  std::function<void(std::string_view verb, int status)> observe;
};

// A kubeconfig (YAML or JSON), its current context. Relative file paths are relative to the
// file's directory, as kubectl reads them.
absl::StatusOr<KubeConfig> LoadKubeconfig(const std::string& path);
absl::StatusOr<KubeConfig> ParseKubeconfig(std::string_view text, const std::string& path);

// In-cluster: KUBERNETES_SERVICE_HOST/_PORT from `getenv`, token and ca.crt from `sa_dir`
// (/var/run/secrets/kubernetes.io/serviceaccount). NotFound when not in a cluster.
absl::StatusOr<KubeConfig> InClusterConfig(const std::function<const char*(const char*)>& getenv,
                                           const std::string& sa_dir);

// ---- The YAML subset kubeconfigs use: block mappings and sequences, plain and quoted scalars,
// `{}` / `[]`, comments. Anchors, multi-line scalars and flow collections with content are
// errors. Exposed for tests and the fuzzer.
struct YamlEntry;
struct YamlNode {
  enum class Kind { kNull, kScalar, kMap, kSeq } kind = Kind::kNull;
  std::string scalar;
  std::vector<YamlEntry> map;  // in file order
  std::vector<YamlNode> seq;

  const YamlNode* Get(std::string_view key) const;  // nullptr when absent or not a map
  std::string Str(std::string_view key) const;      // "" when absent or not a scalar
};
struct YamlEntry {
  std::string key;
  YamlNode value;
};
absl::StatusOr<YamlNode> ParseYaml(std::string_view text);

}  // namespace pcid::projection
