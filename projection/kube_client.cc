#include "projection/kube_client.h"

#include <absl/strings/str_cat.h>
#include <httplib.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <limits>

#include "core/status.h"
#include "core/text_file.h"

namespace pcid::projection {
namespace {

constexpr size_t kMaxBody = 8 << 20;

// Every certificate of a PEM bundle, in a store the TLS context takes over.
absl::StatusOr<X509_STORE*> CaStore(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  STACK_OF(X509_INFO)* infos = PEM_X509_INFO_read_bio(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (infos == nullptr) return absl::InvalidArgumentError("CA: no PEM certificate");
  X509_STORE* store = X509_STORE_new();
  int n = 0;
  for (int i = 0; i < sk_X509_INFO_num(infos); ++i) {
    X509_INFO* info = sk_X509_INFO_value(infos, i);
    if (info->x509 && X509_STORE_add_cert(store, info->x509) == 1) ++n;
  }
  sk_X509_INFO_pop_free(infos, X509_INFO_free);
  if (n == 0) {
    X509_STORE_free(store);
    return absl::InvalidArgumentError("CA: no usable certificate");
  }
  return store;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KubeClient>> KubeClient::Create(const KubeConfig& config) {
  std::unique_ptr<KubeClient> c(new KubeClient());
  c->config_ = config;
  c->server_ = absl::StrCat(config.https ? "https://" : "http://", config.host, ":", config.port);
  if (!config.https) {
    c->http_ = std::make_unique<httplib::ClientImpl>(config.host, config.port);
  } else {
    std::unique_ptr<httplib::SSLClient> ssl;
    if (!config.client_cert_pem.empty()) {
      BIO* cb = BIO_new_mem_buf(config.client_cert_pem.data(),
                                static_cast<int>(config.client_cert_pem.size()));
      X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
      BIO_free(cb);
      BIO* kb = BIO_new_mem_buf(config.client_key_pem.data(),
                                static_cast<int>(config.client_key_pem.size()));
      EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
      BIO_free(kb);
      if (cert == nullptr || key == nullptr) {
        X509_free(cert);
        EVP_PKEY_free(key);
        return absl::InvalidArgumentError(
            absl::StrCat(config.origin, ": unusable client certificate or key"));
      }
      ssl = std::make_unique<httplib::SSLClient>(config.host, config.port, cert, key);
      X509_free(cert);  // the TLS context holds its own references
      EVP_PKEY_free(key);
    } else {
      ssl = std::make_unique<httplib::SSLClient>(config.host, config.port);
    }
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(config.origin, ": TLS set-up failed"));
    }
    if (!config.ca_pem.empty()) {
      auto store = CaStore(config.ca_pem);
      if (!store.ok())
        return absl::InvalidArgumentError(
            absl::StrCat(config.origin, ": ", store.status().message()));
      ssl->set_ca_cert_store(*store);  // owned by the TLS context from here
      // Without a CA file or directory, httplib adds the system roots to this store on first
      // connect: the kubeconfig's CA must replace them, as it does for kubectl (and they cost
      // ~1 MiB per client). A "directory" below /dev/null can hold no certificates.
      ssl->set_ca_cert_path("", "/dev/null");
    }
    ssl->enable_server_certificate_verification(true);
    c->tls_ = ssl.get();
    c->http_ = std::move(ssl);
  }
  c->http_->set_connection_timeout(5, 0);
  c->http_->set_read_timeout(30, 0);
  c->http_->set_write_timeout(10, 0);
  c->http_->set_keep_alive(true);
  // A request's headers and body go out as separate writes: with Nagle the body waits for the
  // server's delayed ACK (up to 40 ms a write).
  c->http_->set_tcp_nodelay(true);
  return c;
}

KubeClient::~KubeClient() = default;

std::string KubeClient::TransportError(httplib::Error err) const {
  if (err != httplib::Error::SSLServerVerification || tls_ == nullptr) {
    return httplib::to_string(err);
  }
  const long result = tls_->get_openssl_verify_result();
  return result != X509_V_OK ? absl::StrCat("server certificate not trusted: ",
                                            X509_verify_cert_error_string(result))
                             : absl::StrCat("server certificate does not name ", config_.host);
}

std::string KubeClient::Token() {
  if (config_.token_file.empty()) return config_.token;
  // The kubelet rotates a projected token by swapping a symlink to a new file: stat() follows
  // it, and the new file differs in inode (its mtime may equal the old one's at the clock's
  // granularity). A failed read is tried again on the next request.
  struct stat st;
  if (::stat(config_.token_file.c_str(), &st) == 0) {
    const TokenFileId id{int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec,
                         static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_dev),
                         static_cast<int64_t>(st.st_size)};
    if (id != token_id_) {
      auto text = ReadTextFile(config_.token_file, std::numeric_limits<size_t>::max());
      if (text.ok()) {
        token_ = *std::move(text);
        while (!token_.empty() && (token_.back() == '\n' || token_.back() == ' ')) {
          token_.pop_back();
        }
        token_id_ = id;
      }
    }
  }
  return token_;
}

absl::StatusOr<KubeResponse> KubeClient::Call(std::string_view method, const std::string& path,
                                              const std::string& body,
                                              const std::string& content_type) {
  httplib::Request req;
  req.method = std::string(method);
  req.path = path;
  req.headers = {{"Accept", "application/json"}, {"User-Agent", "pcidevices"}};
  if (std::string token = Token(); !token.empty())
    req.headers.emplace("Authorization", "Bearer " + token);
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    req.body = body;
    req.headers.emplace("Content-Type", content_type);
  }
  size_t received = 0;
  std::string out;
  bool too_large = false;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    received += n;
    if (received > kMaxBody) {
      too_large = true;
      return false;
    }
    out.append(data, n);
    return true;
  };
  if (stopped_)
    return absl::CancelledError(absl::StrCat(ToAbsl(method), " ", server_, path, ": stopping"));
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  const bool ok = http_->send(req, res, err);
  if (config_.observe) config_.observe(method, ok ? res.status : 0);
  if (too_large) {
    return absl::ResourceExhaustedError(
        absl::StrCat(ToAbsl(method), " ", server_, path, ": answer over ", kMaxBody, " bytes"));
  }
  if (!ok) {
    return absl::UnavailableError(
        absl::StrCat(ToAbsl(method), " ", server_, path, ": ", TransportError(err)));
  }
  if (res.status == 401) token_id_ = {};  // read the token file again before the next request
  return KubeResponse{res.status, std::move(out)};
}

absl::StatusOr<int> KubeClient::Stream(const std::string& path,
                                       const std::function<bool(std::string_view)>& on_line) {
  httplib::Request req;
  req.method = "GET";
  req.path = path;
  req.headers = {{"Accept", "application/json"}, {"User-Agent", "pcidevices"}};
  if (std::string token = Token(); !token.empty())
    req.headers.emplace("Authorization", "Bearer " + token);
  std::string pending;
  bool too_large = false;
  std::string error_body;
  int status = 0;
  req.response_handler = [&](const httplib::Response& r) {
    status = r.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (stopped_) return false;
    if (status / 100 != 2) {  // an error answer: keep (some of) it for the message
      if (error_body.size() < 4096) error_body.append(data, std::min<size_t>(n, 4096));
      return true;
    }
    pending.append(data, n);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      if (!on_line(std::string_view(pending).substr(start, nl - start))) return false;
    }
    pending.erase(0, start);
    if (pending.size() > kMaxBody) {
      too_large = true;
      return false;
    }
    return true;
  };
  if (stopped_) return absl::CancelledError(absl::StrCat("watch ", server_, path, ": stopping"));
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  const bool ok = http_->send(req, res, err);
  // A watch counts when it ends; its verb is WATCH, as the API server's metrics say.
  if (config_.observe && err != httplib::Error::Canceled) config_.observe("WATCH", ok ? status : 0);
  if (too_large)
    return absl::ResourceExhaustedError(
        absl::StrCat("watch ", server_, path, ": line over ", kMaxBody, " bytes"));
  if (!ok && err != httplib::Error::Canceled) {
    return absl::UnavailableError(absl::StrCat("watch ", server_, path, ": ", TransportError(err)));
  }
  if (!pending.empty() && status / 100 == 2) on_line(pending);
  if (status == 401) token_id_ = {};
  return status;
}

void KubeClient::Stop() {
  stopped_ = true;
  http_->stop();
}

}  // namespace pcid::projection
