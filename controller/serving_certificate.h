// File: controller/serving_certificate.h
//
// The webhook's TLS certificate and key, read from files (a Secret mounted into the pod) and
// read again when either file changes (a rotation replaces the Secret volume's `..data` link, so
// the files' identity changes), without a restart: each TLS handshake asks for the current pair.
// A pair that does not load (half-written, key not matching) keeps the previous one in service.
// Thread-safe.
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/status/statusor.h>
#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/mutex.h"

namespace spdlog {
class logger;
}

namespace pcid::controller {

class ServingCertificate {
 public:
  // The loaded certificate chain and key (OpenSSL objects, freed with the last reference).
  struct Pair;

  // InvalidArgument naming the file for a certificate or key that does not load or match.
  static absl::StatusOr<std::unique_ptr<ServingCertificate>> Load(std::string cert_file,
                                                                  std::string key_file,
                                                                  spdlog::logger& log);
  ~ServingCertificate();

  // Sets `ctx` to ask this object for the certificate at every handshake (SSL_CTX_set_cert_cb);
  // also TLS 1.2 at least, and ECDHE AEAD ciphers only.
  bool Configure(SSL_CTX& ctx);

  // The pair in service, read again first when a file changed. Never null after Load.
  std::shared_ptr<const Pair> Current();

  // How many times a changed pair was put in service.
  uint64_t reloads() const;

 private:
  struct FileId {
    int64_t mtime_ns = -1;
    uint64_t inode = 0, device = 0;
    int64_t size = -1;
    friend bool operator==(const FileId&, const FileId&) = default;
  };
  ServingCertificate(std::string cert_file, std::string key_file, spdlog::logger& log);
  absl::StatusOr<std::shared_ptr<const Pair>> Read() const;
  FileId Identify(const std::string& path) const;

  const std::string cert_file_, key_file_;
  spdlog::logger& log_;
  mutable Mutex mu_;
  std::shared_ptr<const Pair> pair_ ABSL_GUARDED_BY(mu_);
  FileId cert_id_ ABSL_GUARDED_BY(mu_), key_id_ ABSL_GUARDED_BY(mu_);
  bool failing_ ABSL_GUARDED_BY(mu_) = false;  // a failed reload was logged
  uint64_t reloads_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pcid::controller
