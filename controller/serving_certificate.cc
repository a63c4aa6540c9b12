#include "controller/serving_certificate.h"

#include <absl/strings/str_cat.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "core/status.h"

namespace pcid::controller {

struct ServingCertificate::Pair {
  struct Free {
    void operator()(X509* x) const { X509_free(x); }
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
    void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
  };
  std::unique_ptr<X509, Free> cert;
  std::unique_ptr<STACK_OF(X509), Free> chain;
  std::unique_ptr<EVP_PKEY, Free> key;
};

namespace {

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no PEM data";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};

int CertCallback(SSL* ssl, void* arg) {
  std::shared_ptr<const ServingCertificate::Pair> pair =
      static_cast<ServingCertificate*>(arg)->Current();
  if (!pair) return 0;
  if (SSL_use_certificate(ssl, pair->cert.get()) != 1 ||
      SSL_use_PrivateKey(ssl, pair->key.get()) != 1 ||
      SSL_set1_chain(ssl, pair->chain.get()) != 1) {
    return 0;
  }
  return 1;
}

}  // namespace

ServingCertificate::ServingCertificate(std::string cert_file, std::string key_file,
                                       spdlog::logger& log)
    : cert_file_(std::move(cert_file)), key_file_(std::move(key_file)), log_(log) {}

ServingCertificate::~ServingCertificate() = default;

absl::StatusOr<std::unique_ptr<ServingCertificate>> ServingCertificate::Load(std::string cert_file,
                                                                             std::string key_file,
                                                                             spdlog::logger& log) {
  std::unique_ptr<ServingCertificate> c(
      new ServingCertificate(std::move(cert_file), std::move(key_file), log));
  MutexLock lock(&c->mu_);
  c->cert_id_ = c->Identify(c->cert_file_);
  c->key_id_ = c->Identify(c->key_file_);
  PCID_ASSIGN_OR_RETURN(c->pair_, c->Read());
  return c;
}

ServingCertificate::FileId ServingCertificate::Identify(const std::string& path) const {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec, uint64_t(st.st_ino),
          uint64_t(st.st_dev), int64_t(st.st_size)};
}

absl::StatusOr<std::shared_ptr<const ServingCertificate::Pair>> ServingCertificate::Read() const {
  auto pair = std::make_shared<Pair>();
  std::unique_ptr<BIO, BioFree> cert_bio(BIO_new_file(cert_file_.c_str(), "r"));
  if (!cert_bio) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate ", cert_file_, ": cannot open: ", OpenSslError()));
  }
  pair->cert.reset(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (!pair->cert) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate ", cert_file_, ": no PEM certificate: ", OpenSslError()));
  }
  pair->chain.reset(sk_X509_new_null());
  while (X509* extra = PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr)) {
    sk_X509_push(pair->chain.get(), extra);
  }
  ERR_clear_error();  // the end of the file
  std::unique_ptr<BIO, BioFree> key_bio(BIO_new_file(key_file_.c_str(), "r"));
  if (!key_bio) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS private key ", key_file_, ": cannot open: ", OpenSslError()));
  }
  pair->key.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (!pair->key) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS private key ", key_file_, ": no PEM private key: ", OpenSslError()));
  }
  if (X509_check_private_key(pair->cert.get(), pair->key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("TLS private key ", key_file_,
                                                   " does not match the certificate ", cert_file_));
  }
  return std::shared_ptr<const Pair>(std::move(pair));
}

std::shared_ptr<const ServingCertificate::Pair> ServingCertificate::Current() {
  MutexLock lock(&mu_);
  const FileId cert = Identify(cert_file_), key = Identify(key_file_);
  if (cert == cert_id_ && key == key_id_) return pair_;
  absl::StatusOr<std::shared_ptr<const Pair>> fresh = Read();
  if (!fresh.ok()) {
    // Half of a rotation, or a broken Secret: serve the previous pair, say so once.
    if (!failing_) {
      log_.warn("webhook certificate: {}; still serving the previous one",
                ToStd(fresh.status().message()));
    }
    failing_ = true;
    return pair_;
  }
  pair_ = *std::move(fresh);
  cert_id_ = cert;
  key_id_ = key;
  failing_ = false;
  ++reloads_;
  log_.info("webhook certificate: reloaded {} and {}", cert_file_, key_file_);
  return pair_;
}

uint64_t ServingCertificate::reloads() const {
  MutexLock lock(&mu_);
  return reloads_;
}

bool ServingCertificate::Configure(SSL_CTX& ctx) {
  SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
  // TLS 1.2: forward secrecy and AEAD only (TLS 1.3's suites are all such).
  if (SSL_CTX_set_cipher_list(&ctx,
                              "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                              "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305") != 1) {
    return false;
  }
  SSL_CTX_set_cert_cb(&ctx, CertCallback, this);
  return true;
}

}  // namespace pcid::controller
