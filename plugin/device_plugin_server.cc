#include "plugin/device_plugin_server.h"

#include <absl/strings/str_cat.h>
#include <deviceplugin/v1beta1/api.grpc.pb.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>

#include "core/status.h"

namespace pcid::plugin {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  // absl and gRPC share their code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

void FillList(const Resource& resource, v1beta1::ListAndWatchResponse& out) {
  out.Clear();
  for (const PluginDevice& d : resource.devices) {
    v1beta1::Device* dev = out.add_devices();
    dev->set_id(d.id);
    dev->set_health(d.healthy ? "Healthy" : "Unhealthy");
    if (d.numa_node >= 0) dev->mutable_topology()->add_nodes()->set_id(d.numa_node);
  }
}

}  // namespace

class Watcher;

struct DevicePluginServer::State {
  std::string socket_path;
  std::string resource_name;
  ServerHooks hooks;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1beta1::DevicePlugin::CallbackService> service;

  std::mutex mu;
  std::condition_variable drained;           // signalled when `watchers` becomes empty
  std::shared_ptr<const Resource> resource;  // guarded by mu
  uint64_t generation = 0;                   // guarded by mu
  std::set<Watcher*> watchers;               // guarded by mu
  bool stopping = false;                     // guarded by mu

  std::shared_ptr<const Resource> Current() {
    std::lock_guard<std::mutex> lock(mu);
    return resource;
  }
};

// One ListAndWatch stream: sends the full list at start and after every Update, one write in
// flight at a time; a write that completes with a newer generation pending sends again.
class Watcher : public grpc::ServerWriteReactor<v1beta1::ListAndWatchResponse> {
 public:
  explicit Watcher(DevicePluginServer::State* state) : state_(state) {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->stopping) {
      finished_ = true;
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "device plugin stopping"));
      return;
    }
    state_->watchers.insert(this);
    MaybeWriteLocked();
  }

  // Called with state_->mu held.
  void MaybeWriteLocked() {
    if (writing_ || finished_ || sent_ == state_->generation) return;
    FillList(*state_->resource, response_);
    sent_ = state_->generation;
    writing_ = true;
    StartWrite(&response_);
  }
  // Called with state_->mu held.
  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(state_->mu);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream closed"));
      return;
    }
    MaybeWriteLocked();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(state_->mu);
    FinishLocked(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->watchers.erase(this);
      if (state_->watchers.empty()) state_->drained.notify_all();
    }
    delete this;
  }

 private:
  // Not owned: the server's destructor waits until every watcher is done before freeing it, so
  // the State (and the grpc::Server in it) is never destroyed on one of gRPC's own threads.
  DevicePluginServer::State* state_;
  v1beta1::ListAndWatchResponse response_;
  uint64_t sent_ = 0;
  bool writing_ = false;
  bool finished_ = false;
};

class DevicePluginService : public v1beta1::DevicePlugin::CallbackService {
 public:
  explicit DevicePluginService(DevicePluginServer::State* state) : state_(state) {}

  grpc::ServerUnaryReactor* GetDevicePluginOptions(grpc::CallbackServerContext* ctx,
                                                   const v1beta1::Empty*,
                                                   v1beta1::DevicePluginOptions* out) override {
    out->set_pre_start_required(true);
    out->set_get_preferred_allocation_available(true);
    return Done(ctx, grpc::Status::OK);
  }

  grpc::ServerWriteReactor<v1beta1::ListAndWatchResponse>* ListAndWatch(
      grpc::CallbackServerContext*, const v1beta1::Empty*) override {
    return new Watcher(state_);
  }

  grpc::ServerUnaryReactor* GetPreferredAllocation(
      grpc::CallbackServerContext* ctx, const v1beta1::PreferredAllocationRequest* req,
      v1beta1::PreferredAllocationResponse* out) override {
    DevicePluginServer::State* state = state_;
    const auto resource = state->Current();
    for (const auto& c : req->container_requests()) {
      const std::vector<std::string> available(c.available_deviceids().begin(),
                                               c.available_deviceids().end());
      const std::vector<std::string> must(c.must_include_deviceids().begin(),
                                          c.must_include_deviceids().end());
      const size_t size = c.allocation_size() > 0 ? static_cast<size_t>(c.allocation_size()) : 0;
      auto* answer = out->add_container_responses();
      for (const std::string& id : PreferredAllocation(*resource, available, must, size)) {
        answer->add_deviceids(id);
      }
    }
    return Done(ctx, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* Allocate(grpc::CallbackServerContext* ctx,
                                     const v1beta1::AllocateRequest* req,
                                     v1beta1::AllocateResponse* out) override {
    DevicePluginServer::State* state = state_;
    const auto resource = state->Current();
    for (const auto& c : req->container_requests()) {
      const std::vector<std::string> ids(c.devices_ids().begin(), c.devices_ids().end());
      auto plan = PlanAllocation(*resource, ids);
      if (plan.ok() && state->hooks.on_allocate) {
        if (absl::Status hooked = state->hooks.on_allocate(*resource, ids, *plan); !hooked.ok()) {
          plan = hooked;
        }
      }
      if (!plan.ok()) {
        out->Clear();  // never a partial answer
        return Done(ctx, ToGrpc(plan.status()));
      }
      auto* answer = out->add_container_responses();
      for (const auto& [key, value] : plan->envs) (*answer->mutable_envs())[key] = value;
      for (const DeviceNode& node : plan->nodes) {
        auto* spec = answer->add_devices();
        spec->set_host_path(node.path);
        spec->set_container_path(node.path);
        spec->set_permissions(node.permissions);
      }
    }
    return Done(ctx, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* PreStartContainer(grpc::CallbackServerContext* ctx,
                                              const v1beta1::PreStartContainerRequest* req,
                                              v1beta1::PreStartContainerResponse*) override {
    DevicePluginServer::State* state = state_;
    if (!state->hooks.pre_start) return Done(ctx, grpc::Status::OK);
    const std::vector<std::string> ids(req->devices_ids().begin(), req->devices_ids().end());
    return Done(ctx, ToGrpc(state->hooks.pre_start(*state->Current(), ids)));
  }

 private:
  static grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, grpc::Status status) {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(std::move(status));
    return reactor;
  }

  DevicePluginServer::State* state_;  // outlives every handler (see ~DevicePluginServer)
};

absl::StatusOr<std::unique_ptr<DevicePluginServer>> DevicePluginServer::Start(
    const std::string& socket_path, Resource resource, ServerHooks hooks) {
  if (::unlink(socket_path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat(resource.name, ": remove stale socket ", socket_path));
  }
  auto state = std::make_unique<State>();
  state->socket_path = socket_path;
  state->resource_name = resource.name;
  state->hooks = std::move(hooks);
  state->resource = std::make_shared<const Resource>(std::move(resource));
  state->generation = 1;
  state->service = std::make_unique<DevicePluginService>(state.get());

  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix://" + socket_path, grpc::InsecureServerCredentials());
  builder.RegisterService(state->service.get());
  state->server = builder.BuildAndStart();
  if (!state->server) {
    return absl::UnavailableError(
        absl::StrCat(state->resource_name, ": cannot listen on ", socket_path));
  }
  if (::chmod(socket_path.c_str(), 0600) != 0) {
    const absl::Status st =
        ErrnoStatus(errno, absl::StrCat(state->resource_name, ": chmod 0600 ", socket_path));
    state->server->Shutdown();
    ::unlink(socket_path.c_str());
    return st;
  }
  return std::unique_ptr<DevicePluginServer>(new DevicePluginServer(std::move(state)));
}

DevicePluginServer::DevicePluginServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

DevicePluginServer::~DevicePluginServer() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stopping = true;
    for (Watcher* w : state_->watchers) {
      w->FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "device plugin stopping"));
    }
  }
  state_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  state_->server->Wait();
  bool drained;
  {
    std::unique_lock<std::mutex> lock(state_->mu);
    drained = state_->drained.wait_for(lock, std::chrono::seconds(2),
                                       [&] { return state_->watchers.empty(); });
  }
  ::unlink(state_->socket_path.c_str());
  if (!drained) {
    // A stream gRPC never completed: keep its State alive rather than free it under the stream
    // (a bounded leak instead of a use-after-free). Seen rarely under rapid kubelet restarts.
    (void)state_.release();
  }
}

void DevicePluginServer::Update(Resource resource) {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->resource = std::make_shared<const Resource>(std::move(resource));
  ++state_->generation;
  for (Watcher* w : state_->watchers) w->MaybeWriteLocked();
}

const std::string& DevicePluginServer::socket_path() const { return state_->socket_path; }
const std::string& DevicePluginServer::resource_name() const { return state_->resource_name; }
std::string DevicePluginServer::endpoint() const {
  const size_t slash = state_->socket_path.rfind('/');
  return slash == std::string::npos ? state_->socket_path : state_->socket_path.substr(slash + 1);
}

}  // namespace pcid::plugin
