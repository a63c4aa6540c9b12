#include "plugin/device_plugin_server.h"

#include <absl/base/thread_annotations.h>
#include <absl/strings/str_cat.h>
#include <deviceplugin/v1beta1/api.grpc.pb.h>
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "core/mutex.h"
#include "core/status.h"
#include "plugin/queue_wake.h"

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

namespace {

// Every call object on the server's completion queue. Its tags are Events naming the object
// and what completed; the queue's one thread dispatches them to Proceed.
class Call {
 public:
  virtual ~Call() = default;
  virtual void Proceed(int what, bool ok) = 0;
};

struct Event {
  Call* call;
  int what;
};

class Stream;

}  // namespace

struct DevicePluginServer::State {
  std::string socket_path;
  std::string resource_name;
  ServerHooks hooks;
  v1beta1::DevicePlugin::AsyncService service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  std::thread thread;  // the only one waiting on `cq`

  Mutex mu;
  std::shared_ptr<const Resource> resource ABSL_GUARDED_BY(mu);
  uint64_t generation ABSL_GUARDED_BY(mu) = 0;
  std::set<Call*> calls ABSL_GUARDED_BY(mu);      // every live call object
  std::set<Stream*> streams ABSL_GUARDED_BY(mu);  // ListAndWatch streams
  bool stopping ABSL_GUARDED_BY(mu) = false;      // no new calls accepted
  bool cq_closed ABSL_GUARDED_BY(mu) = false;     // no new operations may start
  // Update's wake-up for the streams, set and not yet delivered: the writes start on this
  // server's thread, never on the caller's (the daemon's owner thread, which must not wait for
  // gRPC's internal locks).
  std::unique_ptr<grpc::Alarm> wake ABSL_GUARDED_BY(mu);
  std::unique_ptr<Call> waker;  // what the wake-up's tag names
  Event wake_event{nullptr, 0};

  std::shared_ptr<const Resource> Current() {
    MutexLock lock(&mu);
    return resource;
  }
  // Waits on the queue without a timeout: an idle plugin never wakes up.
  void Run() {
    void* tag;
    bool ok;
    while (cq->Next(&tag, &ok)) {
      auto* event = static_cast<Event*>(tag);
      // Every operation is started under mu. gRPC's queue orders that start before this event,
      // in code ThreadSanitizer cannot see (Debian's gRPC is not instrumented); taking the lock
      // once shows it the same order. One uncontended lock per event.
      { MutexLock lock(&mu); }
      event->call->Proceed(event->what, ok);
    }
  }
};

using State = DevicePluginServer::State;

namespace {

// One ListAndWatch stream: sends the full list at start and after every Update, one write in
// flight at a time; a write that completes with a newer generation pending sends again.
class Stream final : public Call {
 public:
  static void Listen(State* state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) {
    auto* s = new Stream(state);
    state->calls.insert(s);
    s->ctx_.AsyncNotifyWhenDone(&s->done_);
    state->service.RequestListAndWatch(&s->ctx_, &s->request_, &s->writer_, state->cq.get(),
                                       state->cq.get(), &s->started_);
  }

  void Proceed(int what, bool ok) override {
    ReleasableMutexLock lock(&state_->mu);
    switch (what) {
      case kStarted:
        // Not started (the server is stopping): no other tag comes; freed with the queue.
        if (!ok) return;
        if (!state_->stopping) Listen(state_);
        live_ = true;
        state_->streams.insert(this);
        break;
      case kWritten:
        writing_ = false;
        if (!ok) finished_ = true;  // the kubelet went away
        break;
      case kFinished:
        finishing_ = false;
        break;
      case kDone:
        done_seen_ = true;
        finished_ = true;
        break;
    }
    MaybeWriteLocked();
    if (live_ && done_seen_ && !writing_ && !finishing_) {
      state_->streams.erase(this);
      state_->calls.erase(this);
      lock.Release();
      delete this;
    }
  }

  // MaybeWriteLocked for the server, which holds the lock: the analysis cannot tell that this
  // stream's state_ is that server's state, the assertion tells it (and checks it).
  void Wake() {
    state_->mu.AssertHeld();
    MaybeWriteLocked();
  }

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    if (!live_ || writing_ || finishing_ || finished_ || state_->cq_closed) return;
    if (state_->stopping) {
      finished_ = finishing_ = true;
      writer_.Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "device plugin stopping"),
                     &finished_event_);
      return;
    }
    if (sent_ == state_->generation) return;
    FillList(*state_->resource, response_);
    sent_ = state_->generation;
    writing_ = true;
    writer_.Write(response_, &written_);
  }

 private:
  enum { kStarted, kWritten, kFinished, kDone };
  explicit Stream(State* state) : state_(state), writer_(&ctx_) {}

  State* state_;
  grpc::ServerContext ctx_;
  v1beta1::Empty request_;
  grpc::ServerAsyncWriter<v1beta1::ListAndWatchResponse> writer_;
  v1beta1::ListAndWatchResponse response_;
  Event started_{this, kStarted}, written_{this, kWritten}, finished_event_{this, kFinished},
      done_{this, kDone};
  // All under state_->mu.
  uint64_t sent_ ABSL_GUARDED_BY(state_->mu) = 0;
  bool live_ ABSL_GUARDED_BY(state_->mu) = false;
  bool writing_ ABSL_GUARDED_BY(state_->mu) = false;
  bool finishing_ ABSL_GUARDED_BY(state_->mu) = false;
  bool finished_ ABSL_GUARDED_BY(state_->mu) = false;
  bool done_seen_ ABSL_GUARDED_BY(state_->mu) = false;
};

// Update's wake-up: writes the new list to every stream, on the server's thread.
class Waker final : public Call {
 public:
  explicit Waker(State* state) : state_(state) {}
  void Proceed(int, bool) override {
    std::unique_ptr<grpc::Alarm> delivered;
    MutexLock lock(&state_->mu);
    delivered = std::move(state_->wake);
    for (Stream* s : state_->streams) s->Wake();
  }

 private:
  State* state_;
};

// One unary call of one method; `Handle` computes the answer on the queue's thread.
template <class Request, class Response>
class Unary final : public Call {
 public:
  using RequestFn = void (v1beta1::DevicePlugin::AsyncService::*)(
      grpc::ServerContext*, Request*, grpc::ServerAsyncResponseWriter<Response>*,
      grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  // `then`, if set, runs once the answer has gone out (bookkeeping that must not delay it).
  using Handler = grpc::Status (*)(State&, const Request&, Response&, std::function<void()>& then);

  static void Listen(State* state, RequestFn request, Handler handle)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) {
    auto* u = new Unary(state, request, handle);
    state->calls.insert(u);
    (state->service.*request)(&u->ctx_, &u->request_, &u->writer_, state->cq.get(), state->cq.get(),
                              &u->started_);
  }

  void Proceed(int what, bool ok) override {
    if (what == kFinished) {
      if (ok && then_) then_();
      {
        MutexLock lock(&state_->mu);
        state_->calls.erase(this);
      }
      delete this;
      return;
    }
    if (!ok) return;  // not started (the server is stopping): freed with the queue
    {
      MutexLock lock(&state_->mu);
      if (!state_->stopping) Listen(state_, request_fn_, handle_);
    }
    const grpc::Status status = handle_(*state_, request_, response_, then_);
    MutexLock lock(&state_->mu);
    if (state_->cq_closed) return;  // cancelled by the shutdown; freed with the queue
    if (status.ok()) {
      writer_.Finish(response_, status, &finished_);
    } else {
      writer_.FinishWithError(status, &finished_);
    }
  }

 private:
  enum { kStarted, kFinished };
  Unary(State* state, RequestFn request, Handler handle)
      : state_(state), request_fn_(request), handle_(handle), writer_(&ctx_) {}

  State* state_;
  RequestFn request_fn_;
  Handler handle_;
  grpc::ServerContext ctx_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> writer_;
  Event started_{this, kStarted}, finished_{this, kFinished};
  std::function<void()> then_;
};

grpc::Status GetOptions(State&, const v1beta1::Empty&, v1beta1::DevicePluginOptions& out,
                        std::function<void()>&) {
  out.set_pre_start_required(true);
  out.set_get_preferred_allocation_available(true);
  return grpc::Status::OK;
}

grpc::Status GetPreferred(State& state, const v1beta1::PreferredAllocationRequest& req,
                          v1beta1::PreferredAllocationResponse& out, std::function<void()>&) {
  const auto resource = state.Current();
  for (const auto& c : req.container_requests()) {
    const std::vector<std::string> available(c.available_deviceids().begin(),
                                             c.available_deviceids().end());
    const std::vector<std::string> must(c.must_include_deviceids().begin(),
                                        c.must_include_deviceids().end());
    const size_t size = c.allocation_size() > 0 ? static_cast<size_t>(c.allocation_size()) : 0;
    auto* answer = out.add_container_responses();
    for (const std::string& id : PreferredAllocation(*resource, available, must, size)) {
      answer->add_deviceids(id);
    }
  }
  return grpc::Status::OK;
}

grpc::Status Decide(State& state, const std::shared_ptr<const Resource>& resource,
                    const v1beta1::AllocateRequest& req, v1beta1::AllocateResponse& out,
                    std::function<void()>& then) {
  std::vector<std::string> all_ids;
  for (const auto& c : req.container_requests()) {
    const std::vector<std::string> ids(c.devices_ids().begin(), c.devices_ids().end());
    auto plan = PlanAllocation(*resource, ids);
    if (plan.ok() && state.hooks.on_allocate) {
      if (absl::Status hooked = state.hooks.on_allocate(*resource, ids, *plan); !hooked.ok()) {
        plan = hooked;
      }
    }
    if (!plan.ok()) {
      out.Clear();  // never a partial answer
      return ToGrpc(plan.status());
    }
    all_ids.insert(all_ids.end(), ids.begin(), ids.end());
    auto* answer = out.add_container_responses();
    for (const auto& [key, value] : plan->envs) (*answer->mutable_envs())[key] = value;
    for (const DeviceNode& node : plan->nodes) {
      auto* spec = answer->add_devices();
      spec->set_host_path(node.path);
      spec->set_container_path(node.path);
      spec->set_permissions(node.permissions);
    }
  }
  if (state.hooks.allocated) {
    then = [&state, resource, all_ids = std::move(all_ids)] {
      state.hooks.allocated(*resource, all_ids);
    };
  }
  return grpc::Status::OK;
}

grpc::Status Allocate(State& state, const v1beta1::AllocateRequest& req,
                      v1beta1::AllocateResponse& out, std::function<void()>& then) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto resource = state.Current();
  grpc::Status status = Decide(state, resource, req, out, then);
  if (state.hooks.allocate_timed) {
    state.hooks.allocate_timed(*resource, std::chrono::steady_clock::now() - t0, status.ok());
  }
  return status;
}

grpc::Status PreStart(State& state, const v1beta1::PreStartContainerRequest& req,
                      v1beta1::PreStartContainerResponse&, std::function<void()>&) {
  if (!state.hooks.pre_start) return grpc::Status::OK;
  const std::vector<std::string> ids(req.devices_ids().begin(), req.devices_ids().end());
  return ToGrpc(state.hooks.pre_start(*state.Current(), ids));
}

using Service = v1beta1::DevicePlugin::AsyncService;

}  // namespace

absl::StatusOr<std::unique_ptr<DevicePluginServer>> DevicePluginServer::Start(
    const std::string& socket_path, Resource resource, ServerHooks hooks) {
  if (::unlink(socket_path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat(resource.name, ": remove stale socket ", socket_path));
  }
  auto state = std::make_unique<State>();
  state->socket_path = socket_path;
  state->resource_name = resource.name;
  state->hooks = std::move(hooks);
  {
    MutexLock lock(&state->mu);  // nothing else runs yet; the analysis wants it anyway
    state->resource = std::make_shared<const Resource>(std::move(resource));
    state->generation = 1;
  }

  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix://" + socket_path, grpc::InsecureServerCredentials());
  builder.RegisterService(&state->service);
  state->cq = builder.AddCompletionQueue();
  state->server = builder.BuildAndStart();
  if (!state->server) {
    return absl::UnavailableError(
        absl::StrCat(state->resource_name, ": cannot listen on ", socket_path));
  }
  {
    State* s = state.get();
    MutexLock lock(&s->mu);
    Unary<v1beta1::Empty, v1beta1::DevicePluginOptions>::Listen(
        s, &Service::RequestGetDevicePluginOptions, &GetOptions);
    Stream::Listen(s);
    Unary<v1beta1::PreferredAllocationRequest, v1beta1::PreferredAllocationResponse>::Listen(
        s, &Service::RequestGetPreferredAllocation, &GetPreferred);
    Unary<v1beta1::AllocateRequest, v1beta1::AllocateResponse>::Listen(s, &Service::RequestAllocate,
                                                                       &Allocate);
    Unary<v1beta1::PreStartContainerRequest, v1beta1::PreStartContainerResponse>::Listen(
        s, &Service::RequestPreStartContainer, &PreStart);
  }
  state->waker = std::make_unique<Waker>(state.get());
  state->wake_event = Event{state->waker.get(), 0};
  state->thread = std::thread([s = state.get()] { s->Run(); });
  auto server = std::unique_ptr<DevicePluginServer>(new DevicePluginServer(std::move(state)));
  if (::chmod(socket_path.c_str(), 0600) != 0) {
    return ErrnoStatus(errno, absl::StrCat(server->resource_name(), ": chmod 0600 ", socket_path));
  }
  return server;
}

DevicePluginServer::DevicePluginServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

DevicePluginServer::~DevicePluginServer() {
  {
    // Streams end with UNAVAILABLE (the kubelet then waits for a new registration).
    MutexLock lock(&state_->mu);
    state_->stopping = true;
    for (Stream* s : state_->streams) s->Wake();
  }
  state_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  {
    MutexLock lock(&state_->mu);
    state_->cq_closed = true;
  }
  state_->cq->Shutdown();
  state_->thread.join();  // returns once every tag is drained
  std::set<Call*> calls;
  {
    MutexLock lock(&state_->mu);
    calls.swap(state_->calls);
  }
  for (Call* c : calls) delete c;
  ::unlink(state_->socket_path.c_str());
}

void DevicePluginServer::Update(Resource resource) {
  auto next = std::make_shared<const Resource>(std::move(resource));
  MutexLock lock(&state_->mu);
  state_->resource = std::move(next);
  ++state_->generation;
  if (state_->streams.empty() || state_->wake || state_->cq_closed) return;
  state_->wake = WakeQueue(state_->cq.get(), &state_->wake_event);
}

const std::string& DevicePluginServer::socket_path() const { return state_->socket_path; }
const std::string& DevicePluginServer::resource_name() const { return state_->resource_name; }
std::string DevicePluginServer::endpoint() const {
  const size_t slash = state_->socket_path.rfind('/');
  return slash == std::string::npos ? state_->socket_path : state_->socket_path.substr(slash + 1);
}

}  // namespace pcid::plugin
