#include "dra/kubelet_plugin.h"

#include <absl/strings/str_cat.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "dra/cdi.h"
#include "dra/driver.h"
#include "dra/v1/api.grpc.pb.h"
#include "dra/v1beta1/api.grpc.pb.h"
#include "pluginregistration/v1/api.grpc.pb.h"

namespace pcid::dra {
namespace {

namespace v1 = k8s::io::kubelet::pkg::apis::dra::v1;
namespace v1beta1 = k8s::io::kubelet::pkg::apis::dra::v1beta1;

template <typename Request>
std::vector<ClaimRef> Refs(const Request& req) {
  std::vector<ClaimRef> out;
  for (const auto& c : req.claims()) out.push_back({c.namespace_(), c.name(), c.uid()});
  return out;
}

// The DRA service of one API version (their messages share field numbers and names).
template <typename Api>
class DraService final : public Api::DRAPlugin::Service {
 public:
  DraService(Driver& driver, spdlog::logger& log) : driver_(driver), log_(log) {}

  grpc::Status NodePrepareResources(grpc::ServerContext*,
                                    const typename Api::NodePrepareResourcesRequest* req,
                                    typename Api::NodePrepareResourcesResponse* out) override {
    for (auto& [uid, answer] : driver_.Prepare(Refs(*req))) {
      auto& claim = (*out->mutable_claims())[uid];
      if (!answer.error.empty()) {
        claim.set_error(answer.error);
        continue;
      }
      for (const PreparedDevice& d : answer.devices) {
        auto* dev = claim.add_devices();
        dev->add_request_names(d.request);
        dev->set_pool_name(d.pool);
        dev->set_device_name(d.device);
        for (const std::string& id : d.cdi_ids) dev->add_cdi_device_ids(id);
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status NodeUnprepareResources(grpc::ServerContext*,
                                      const typename Api::NodeUnprepareResourcesRequest* req,
                                      typename Api::NodeUnprepareResourcesResponse* out) override {
    for (auto& [uid, error] : driver_.Unprepare(Refs(*req))) {
      auto& claim = (*out->mutable_claims())[uid];
      if (!error.empty()) claim.set_error(error);
    }
    return grpc::Status::OK;
  }

 private:
  Driver& driver_;
  [[maybe_unused]] spdlog::logger& log_;
};

struct V1 {
  using DRAPlugin = v1::DRAPlugin;
  using NodePrepareResourcesRequest = v1::NodePrepareResourcesRequest;
  using NodePrepareResourcesResponse = v1::NodePrepareResourcesResponse;
  using NodeUnprepareResourcesRequest = v1::NodeUnprepareResourcesRequest;
  using NodeUnprepareResourcesResponse = v1::NodeUnprepareResourcesResponse;
};
struct V1beta1 {
  using DRAPlugin = v1beta1::DRAPlugin;
  using NodePrepareResourcesRequest = v1beta1::NodePrepareResourcesRequest;
  using NodePrepareResourcesResponse = v1beta1::NodePrepareResourcesResponse;
  using NodeUnprepareResourcesRequest = v1beta1::NodeUnprepareResourcesRequest;
  using NodeUnprepareResourcesResponse = v1beta1::NodeUnprepareResourcesResponse;
};

class RegistrationService final : public pluginregistration::Registration::Service {
 public:
  RegistrationService(std::string endpoint, std::atomic<bool>& registered, spdlog::logger& log)
      : endpoint_(std::move(endpoint)), registered_(registered), log_(log) {}

  grpc::Status GetInfo(grpc::ServerContext*, const pluginregistration::InfoRequest*,
                       pluginregistration::PluginInfo* out) override {
    out->set_type("DRAPlugin");
    out->set_name(kDraDriverName);
    out->set_endpoint(endpoint_);
    // The kubelet takes the first it knows: v1 (1.34 and later), else v1beta1.
    out->add_supported_versions("v1.DRAPlugin");
    out->add_supported_versions("v1beta1.DRAPlugin");
    return grpc::Status::OK;
  }

  grpc::Status NotifyRegistrationStatus(grpc::ServerContext*,
                                        const pluginregistration::RegistrationStatus* st,
                                        pluginregistration::RegistrationStatusResponse*) override {
    registered_ = st->plugin_registered();
    if (st->plugin_registered()) {
      log_.info("registered with the kubelet as {}", kDraDriverName);
      return grpc::Status::OK;
    }
    log_.error("the kubelet refused the registration: {}", st->error());
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        absl::StrCat("registration refused: ", st->error()));
  }

 private:
  const std::string endpoint_;
  std::atomic<bool>& registered_;
  spdlog::logger& log_;
};

// Few calls a minute: one completion queue, at most two pollers, per server.
std::unique_ptr<grpc::Server> Listen(const std::string& socket,
                                     std::initializer_list<grpc::Service*> services) {
  ::unlink(socket.c_str());
  grpc::ServerBuilder builder;
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
  builder.AddListeningPort("unix://" + socket, grpc::InsecureServerCredentials());
  for (grpc::Service* s : services) builder.RegisterService(s);
  auto server = builder.BuildAndStart();
  // Only the kubelet (root) talks to these.
  if (server) ::chmod(socket.c_str(), 0600);
  return server;
}

bool IsSocket(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

struct KubeletPlugin::State {
  PluginPaths paths;
  std::string dra_socket, reg_socket;
  spdlog::logger* log = nullptr;
  std::atomic<bool> registered{false};
  std::unique_ptr<DraService<V1>> v1;
  std::unique_ptr<DraService<V1beta1>> v1beta1;
  std::unique_ptr<RegistrationService> registration;
  std::unique_ptr<grpc::Server> dra_server, reg_server;
};

absl::StatusOr<std::unique_ptr<KubeletPlugin>> KubeletPlugin::Start(PluginPaths paths,
                                                                    Driver& driver,
                                                                    spdlog::logger& log) {
  auto s = std::make_unique<State>();
  s->paths = std::move(paths);
  s->log = &log;
  s->dra_socket = s->paths.plugin_dir + "/dra.sock";
  s->reg_socket = absl::StrCat(s->paths.registry_dir, "/", kDraDriverName, "-reg.sock");
  for (const std::string& dir : {s->paths.plugin_dir, s->paths.registry_dir}) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec)
      return absl::InternalError(absl::StrCat("dra: ", dir, ": cannot create: ", ec.message()));
  }
  s->v1 = std::make_unique<DraService<V1>>(driver, log);
  s->v1beta1 = std::make_unique<DraService<V1beta1>>(driver, log);
  s->registration = std::make_unique<RegistrationService>(s->dra_socket, s->registered, log);
  // The service first: the kubelet dials the endpoint as soon as it sees the registration.
  s->dra_server = Listen(s->dra_socket, {s->v1.get(), s->v1beta1.get()});
  if (!s->dra_server)
    return absl::UnavailableError(absl::StrCat("dra: cannot listen on ", s->dra_socket));
  s->reg_server = Listen(s->reg_socket, {s->registration.get()});
  if (!s->reg_server)
    return absl::UnavailableError(absl::StrCat("dra: cannot listen on ", s->reg_socket));
  log.info("serving {} on {} (registration {})", kDraDriverName, s->dra_socket, s->reg_socket);
  return std::unique_ptr<KubeletPlugin>(new KubeletPlugin(std::move(s)));
}

KubeletPlugin::KubeletPlugin(std::unique_ptr<State> state) : state_(std::move(state)) {}

KubeletPlugin::~KubeletPlugin() {
  // The registration first: the kubelet sees the plugin go before its service does.
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(1);
  if (state_->reg_server) state_->reg_server->Shutdown(deadline);
  ::unlink(state_->reg_socket.c_str());
  state_->dra_server->Shutdown(deadline);
  ::unlink(state_->dra_socket.c_str());
}

void KubeletPlugin::Check() {
  if (IsSocket(state_->reg_socket)) return;
  state_->log->warn("{} is gone; listening again", state_->reg_socket);
  state_->registered = false;
  if (state_->reg_server) state_->reg_server->Shutdown(std::chrono::system_clock::now());
  state_->reg_server.reset();
  // A new service object for the new server (one server per service object).
  state_->registration =
      std::make_unique<RegistrationService>(state_->dra_socket, state_->registered, *state_->log);
  state_->reg_server = Listen(state_->reg_socket, {state_->registration.get()});
  if (!state_->reg_server) state_->log->error("cannot listen on {}", state_->reg_socket);
}

bool KubeletPlugin::registered() const { return state_->registered; }
const std::string& KubeletPlugin::registration_socket() const { return state_->reg_socket; }

}  // namespace pcid::dra
