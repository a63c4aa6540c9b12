// clang-format off
// A kubelet emulator for the DRA end-to-end tests: the kubelet's side of plugin registration
// (pluginregistration v1) and of the DRA node service (dra v1 and v1beta1), on the real protos.
//
//   dra_kubelet_emulator --kubelet-dir DIR [--driver pcidevices.io]
//
// Registration, as the kubelet's plugin manager does it (docs/dra-upstream.md §1):
// DIR/plugins_registry is created if missing, watched with inotify and scanned at start (sockets
// already there are registered: a kubelet restart). Names starting with '.' and non-sockets are
// ignored; subdirectories are not followed. For each socket: dial unix:<socket> (10 s), GetInfo
// (1 s); the type must be "DRAPlugin" and the name the driver name (the real kubelet takes any
// name; this emulator serves one driver); the first of the plugin's supported_versions that the
// kubelet knows ("v1.DRAPlugin", "v1beta1.DRAPlugin") is chosen; an empty endpoint means the
// socket itself; an endpoint already registered for the driver is refused. Then
// NotifyRegistrationStatus(true) or (false, the kubelet's error text). A failure before the
// registration is recorded is retried as the kubelet's operation executor does (500 ms,
// doubling, at most 2 m 2 s, while the socket exists; the back-off is kept per socket path until
// an operation there succeeds); a refused endpoint is not retried. A deleted socket, or one
// deleted and created again, deregisters the plugin at the endpoint it had registered (the
// kubelet removes by driver and endpoint), before any new registration. Registration happens as
// soon as the socket appears (the kubelet's reconciler polls every second).
//
// Events, one JSON line each on stdout, every line stamped with "t_us" (wall clock, µs):
//   {"event":"ready","dir":DIR/plugins_registry,"driver":NAME}
//   {"event":"registered","socket":S,"name":N,"endpoint":E,"version":"v1.DRAPlugin",
//    "notified":true[,"notifyError":"..."]}
//   {"event":"rejected","socket":S[,"name":N,"endpoint":E],"error":"...","notified":BOOL
//    [,"notifyError":"..."][,"retryInMs":N]}
//   {"event":"deregistered","socket":S,"name":N,"endpoint":E,"removed":BOOL}
//   {"event":"connection","name":N,"endpoint":E,"connected":BOOL}
// "notified": NotifyRegistrationStatus reached the plugin; "notifyError": the error it returned
// (the upstream helper answers plugin_registered=false with one); "retryInMs": when the kubelet
// tries this socket again; "removed": a plugin was in the DRA store at that endpoint;
// "connection": the channel to a registered plugin became READY or stopped being READY (the
// kubelet tracks this to wipe the driver's ResourceSlices 30 s after the last connection is
// lost; the first may come before "registered").
//
// Commands on stdin, one JSON object a line, each answered by one JSON line on stdout with the
// same "op". Calls go to the driver's newest connected plugin, else its newest (the kubelet's
// pick); "version" ("v1" or "v1beta1") overrides the negotiated service; "claims" may be absent
// (an empty request).
//   {"op":"prepare","claims":[{"namespace":NS,"name":NAME,"uid":UID},...][,"version":V]}
//     -> {"op":"prepare","ok":true,"version":V,"endpoint":E,"ms":F,
//         "claims":{UID:{"error":"...","devices":[{"requestNames":[...],"poolName":P,
//                        "deviceName":D,"cdiDeviceIds":[...][,"shareId":S]}]}}}
//        {"op":"prepare","ok":false,"version":V,"endpoint":E,"ms":F,"grpcCode":N,"message":"..."}
//   {"op":"unprepare","claims":[...][,"version":V]}  -> the same, "claims":{UID:{"error":"..."}}
//   {"op":"bench","count":N,"claims":[...][,"version":V]}  (NodePrepareResources N times)
//     -> {"op":"bench","ok":BOOL,"count":N,"failures":K,"version":V,"endpoint":E
//         [,"firstError":"..."],"min":F,"mean":F,"p50":F,"p99":F,"max":F}
//        (ms, nearest rank; only the RPC is timed; a failure is a gRPC error, a claim's error or
//        a claim missing from the answer)
//   {"op":"status"}  -> {"op":"status","registered":[{"name","endpoint","version","connected"}],
//                        "sockets":[{"socket","name","endpoint"}]}  (the DRA store; the sockets
//                        recorded as registered, a refused endpoint's too)
//   {"op":"quit"}
// No plugin registered: {"op":...,"ok":false,"message":"DRA driver NAME is not registered"} (no
// "grpcCode"). A bad line: {"op":OP or "","ok":false,"message":"..."}.
// NodePrepareResources and NodeUnprepareResources have the kubelet's 45 s deadline. The end of
// stdin, "quit", SIGTERM and SIGINT end the process with status 0 after flushing stdout; like a
// killed kubelet it leaves the plugins' sockets alone.
// clang-format on
#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <absl/strings/str_join.h>
#include <dra/v1/api.grpc.pb.h>
#include <dra/v1beta1/api.grpc.pb.h>
#include <grpcpp/grpcpp.h>
#include <pluginregistration/v1/api.grpc.pb.h>
#include <pthread.h>
#include <signal.h>
#include <simdjson.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/json_writer.h"

namespace {

namespace drav1 = k8s::io::kubelet::pkg::apis::dra::v1;
namespace drav1beta1 = k8s::io::kubelet::pkg::apis::dra::v1beta1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The kubelet's timeouts (pluginmanager/operationexecutor, cm/dra/plugin) and its operation
// executor's back-off after a failed registration (nestedpendingoperations).
constexpr auto kDialTimeout = 10s;
constexpr auto kGetInfoTimeout = 1s;
constexpr auto kNotifyTimeout = 5s;
constexpr auto kCallTimeout = 45s;
constexpr std::chrono::milliseconds kBackoffInitial = 500ms;
constexpr std::chrono::milliseconds kBackoffMax = 122s;
constexpr const char* kServiceV1 = "v1.DRAPlugin";
constexpr const char* kServiceV1beta1 = "v1beta1.DRAPlugin";

std::mutex out_mu;

// Prints one line, stamped with the wall clock in microseconds ("t_us"); `raw` is appended to the
// top-level object as is (members with fractional numbers, which JsonWriter does not write).
void Emit(const pcid::JsonWriter& json, const std::string& raw = "") {
  const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  std::string line = json.str();
  line.insert(line.size() - 1, absl::StrCat(raw, ",\"t_us\":", now));
  std::lock_guard<std::mutex> lock(out_mu);
  std::cout << line << std::endl;
}

// Flushes stdout and ends the process, holding the output lock: nothing is written after.
// gRPC's threads and ours are not joined (a killed kubelet does not either).
[[noreturn]] void Exit(int code) {
  out_mu.lock();
  std::cout.flush();
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(code);
}

void Log(const std::string& text) {
  std::lock_guard<std::mutex> lock(out_mu);
  std::cerr << "dra_kubelet_emulator: " << text << std::endl;
}

std::string Ms(const char* key, double ms) { return absl::StrFormat(",\"%s\":%.4f", key, ms); }

double MsSince(Clock::time_point start, Clock::time_point end) {
  return std::chrono::duration<double, std::milli>(end - start).count();
}

std::chrono::system_clock::time_point Deadline(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

// A channel of its own (no subchannel shared with an earlier registration's back-off): the
// kubelet, in Go, opens a new connection per registration.
std::shared_ptr<grpc::Channel> Dial(const std::string& path) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel("unix:" + path, grpc::InsecureChannelCredentials(), args);
}

// One entry of the kubelet's DRA plugin store: a driver's plugin at an endpoint.
struct DraPlugin {
  std::string name;
  std::string endpoint;
  std::string service;  // the chosen one: kServiceV1 or kServiceV1beta1
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<drav1::DRAPlugin::Stub> v1;
  std::unique_ptr<drav1beta1::DRAPlugin::Stub> v1beta1;
  std::atomic<bool> connected{false};
  std::atomic<bool> gone{false};  // deregistered
};

// The kubelet's connection tracking (its gRPC stats handler, HandleConn): keeps the channel
// connecting, and reconnecting after the plugin went away, until the plugin is deregistered. (A
// channel left alone would progress only with gRPC's backup poller, every 5 s.)
void Monitor(std::shared_ptr<DraPlugin> p) {
  while (!p->gone) {
    const grpc_connectivity_state state = p->channel->GetState(true);
    const bool connected = state == GRPC_CHANNEL_READY;
    if (connected != p->connected.exchange(connected) && !p->gone) {
      pcid::JsonWriter json;
      json.BeginObject().Key("event").String("connection").Key("name").String(p->name);
      json.Key("endpoint").String(p->endpoint).Key("connected").Bool(connected).EndObject();
      Emit(json);
    }
    p->channel->WaitForStateChange(state, Deadline(200ms));
  }
}

// A registration socket in the actual state: registered, or refused after being recorded.
struct Registered {
  uint64_t generation;
  std::string name;
  std::string endpoint;
};

struct Backoff {
  Clock::time_point not_before;
  std::chrono::milliseconds last{0};
};

class Kubelet {
 public:
  explicit Kubelet(std::string driver) : driver_(std::move(driver)) {}

  const std::string& driver() const { return driver_; }

  // The plugin watcher's side: a socket appeared (or was re-created) or went away.
  void SocketCreated(const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    desired_[path] = next_generation_++;
    cv_.notify_all();
  }
  void SocketDeleted(const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    desired_.erase(path);
    cv_.notify_all();
  }

  // The reconciler: deregistrations first, then registrations, each as soon as the desired state
  // changes (the kubelet polls every second) or a back-off ends.
  void Reconcile() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      const auto now = Clock::now();
      auto wake = now + 1s;
      for (auto it = actual_.begin(); it != actual_.end();) {
        auto d = desired_.find(it->first);
        if (in_flight_.count(it->first) == 0 &&
            (d == desired_.end() || d->second != it->second.generation)) {
          Deregister(it->first, it->second);
          it = actual_.erase(it);
        } else {
          ++it;
        }
      }
      for (const auto& [path, generation] : desired_) {
        auto a = actual_.find(path);
        if (a != actual_.end() && a->second.generation == generation) continue;
        if (in_flight_.count(path) != 0) continue;
        auto b = backoff_.find(path);
        if (b != backoff_.end() && b->second.not_before > now) {
          wake = std::min(wake, b->second.not_before);
          continue;
        }
        in_flight_.insert(path);
        std::thread([this, path = path, generation = generation] {
          Register(path, generation);
        }).detach();
      }
      cv_.wait_until(lock, wake);
    }
  }

  // The plugin the kubelet calls: the newest connected one, else the newest.
  std::shared_ptr<DraPlugin> Pick() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = store_.rbegin(); it != store_.rend(); ++it) {
      if ((*it)->connected) return *it;
    }
    return store_.empty() ? nullptr : store_.back();
  }

  void Status(pcid::JsonWriter& json) {
    std::lock_guard<std::mutex> lock(mu_);
    json.Key("registered").BeginArray();
    for (const auto& p : store_) {
      json.BeginObject().Key("name").String(p->name).Key("endpoint").String(p->endpoint);
      json.Key("version").String(p->service);
      json.Key("connected").Bool(p->connected.load()).EndObject();
    }
    json.EndArray().Key("sockets").BeginArray();
    for (const auto& [path, r] : actual_) {
      json.BeginObject().Key("socket").String(path).Key("name").String(r.name);
      json.Key("endpoint").String(r.endpoint).EndObject();
    }
    json.EndArray();
  }

 private:
  // Called with mu_ held.
  void Deregister(const std::string& path, const Registered& r) {
    auto it = std::find_if(store_.begin(), store_.end(),
                           [&](const auto& p) { return p->endpoint == r.endpoint; });
    const bool removed = it != store_.end();
    if (removed) {
      (*it)->gone = true;
      store_.erase(it);
    }
    pcid::JsonWriter json;
    json.BeginObject().Key("event").String("deregistered").Key("socket").String(path);
    json.Key("name").String(r.name).Key("endpoint").String(r.endpoint);
    json.Key("removed").Bool(removed).EndObject();
    Emit(json);
  }

  // NotifyRegistrationStatus's outcome: whether it reached the plugin (any answer, an error
  // too: the upstream helper answers plugin_registered=false with one) and the error, if any.
  struct Notified {
    bool delivered;
    std::string error;
  };
  static Notified Notify(pluginregistration::Registration::Stub& stub, bool registered,
                         const std::string& error) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(kNotifyTimeout));
    pluginregistration::RegistrationStatus status;
    status.set_plugin_registered(registered);
    status.set_error(error);
    pluginregistration::RegistrationStatusResponse resp;
    const grpc::Status st = stub.NotifyRegistrationStatus(&ctx, status, &resp);
    if (st.ok()) return {true, ""};
    const auto code = st.error_code();
    return {code != grpc::StatusCode::UNAVAILABLE && code != grpc::StatusCode::DEADLINE_EXCEEDED,
            absl::StrCat("code ", code, ": ", st.error_message())};
  }

  // validateSupportedServices: the first of the plugin's list that the kubelet knows.
  static std::string ChooseService(const pluginregistration::PluginInfo& info, std::string* error) {
    if (info.supported_versions().empty()) {
      *error = "empty list of supported gRPC services (aka supported versions)";
      return "";
    }
    for (const auto& v : info.supported_versions()) {
      if (v == kServiceV1 || v == kServiceV1beta1) return v;
    }
    std::vector<std::string> quoted;
    for (const auto& v : info.supported_versions()) quoted.push_back(absl::StrCat("\"", v, "\""));
    *error = absl::StrCat("none of services supported by the plugin ([", absl::StrJoin(quoted, " "),
                          "]) are supported by the kubelet ([\"", kServiceV1, "\" \"",
                          kServiceV1beta1, "\"])");
    return "";
  }

  // The registration operation for one socket (operation_generator.go), off the reconciler's
  // thread; at most one per socket at a time.
  void Register(const std::string& path, uint64_t generation) {
    pcid::JsonWriter json;
    json.BeginObject().Key("event").String("rejected").Key("socket").String(path);
    bool recorded = false;  // in the actual state: not retried
    // A failed operation: the kubelet's back-off for this socket grows (and is kept until an
    // operation succeeds, even across new sockets at the same path); retried if not recorded.
    const auto fail = [&](const std::string& error, const Notified& notified) {
      json.Key("error").String(error).Key("notified").Bool(notified.delivered);
      if (!notified.error.empty()) json.Key("notifyError").String(notified.error);
      std::lock_guard<std::mutex> lock(mu_);
      auto& b = backoff_[path];
      b.last = b.last.count() == 0 ? kBackoffInitial : std::min(b.last * 2, kBackoffMax);
      b.not_before = Clock::now() + b.last;
      if (!recorded) json.Key("retryInMs").Int(b.last.count());
      json.EndObject();
      Emit(json);
      in_flight_.erase(path);
      cv_.notify_all();
    };

    auto channel = Dial(path);
    if (!channel->WaitForConnected(Deadline(kDialTimeout))) {
      return fail(absl::StrCat("RegisterPlugin error -- dial failed at socket ", path,
                               ", err: no connection within 10s"),
                  Notified{false, ""});
    }
    auto stub = pluginregistration::Registration::NewStub(channel);
    pluginregistration::PluginInfo info;
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(Deadline(kGetInfoTimeout));
      const grpc::Status st = stub->GetInfo(&ctx, pluginregistration::InfoRequest(), &info);
      if (!st.ok()) {
        return fail(absl::StrCat("RegisterPlugin error -- failed to get plugin info using RPC "
                                 "GetInfo at socket ",
                                 path, ", err: code ", st.error_code(), ": ", st.error_message()),
                    Notified{false, ""});
      }
    }
    json.Key("name").String(info.name());
    const std::string endpoint = info.endpoint().empty() ? path : info.endpoint();
    json.Key("endpoint").String(endpoint);
    if (info.type() != "DRAPlugin") {
      const std::string error = absl::StrCat(
          "RegisterPlugin error -- no handler registered for plugin type: ", info.type(),
          " at socket ", path);
      return fail(error, Notify(*stub, false, error));
    }
    std::string why;
    std::string service = ChooseService(info, &why);
    if (info.name() != driver_) {
      why = absl::StrCat("emulator: plugin name \"", info.name(), "\" is not the driver name \"",
                         driver_, "\"");
      service.clear();
    }
    if (service.empty()) {
      const std::string error = absl::StrCat(
          "RegisterPlugin error -- plugin validation failed with err: invalid supported gRPC "
          "versions of DRA driver plugin ",
          info.name(), " at endpoint ", endpoint, ": ", why);
      return fail(error, Notify(*stub, false, error));
    }
    // Recorded before the handler runs, as the kubelet does: a refused endpoint is not retried,
    // and removing its socket deregisters whatever plugin has that endpoint.
    std::string error;
    std::shared_ptr<DraPlugin> added;
    {
      std::lock_guard<std::mutex> lock(mu_);
      actual_[path] = Registered{generation, info.name(), endpoint};
      recorded = true;
      const bool taken = std::any_of(store_.begin(), store_.end(),
                                     [&](const auto& p) { return p->endpoint == endpoint; });
      if (taken) {
        error =
            absl::StrCat("RegisterPlugin error -- plugin registration failed with err: endpoint ",
                         endpoint, " already registered for DRA driver plugin ", info.name());
      } else {
        auto p = std::make_shared<DraPlugin>();
        p->name = info.name();
        p->endpoint = endpoint;
        p->service = service;
        p->channel = Dial(endpoint);
        p->v1 = drav1::DRAPlugin::NewStub(p->channel);
        p->v1beta1 = drav1beta1::DRAPlugin::NewStub(p->channel);
        store_.push_back(p);
        added = std::move(p);
      }
    }
    if (added) std::thread(Monitor, added).detach();  // connects now, as the kubelet does
    if (!error.empty()) {
      return fail(error, Notify(*stub, false, error));
    }
    const Notified n = Notify(*stub, true, "");
    pcid::JsonWriter ok;
    ok.BeginObject().Key("event").String("registered").Key("socket").String(path);
    ok.Key("name").String(info.name()).Key("endpoint").String(endpoint);
    ok.Key("version").String(service).Key("notified").Bool(n.delivered);
    if (!n.error.empty()) ok.Key("notifyError").String(n.error);
    ok.EndObject();
    Emit(ok);
    std::lock_guard<std::mutex> lock(mu_);
    if (n.error.empty()) backoff_.erase(path);
    in_flight_.erase(path);
    cv_.notify_all();
  }

  const std::string driver_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_generation_ = 1;
  std::map<std::string, uint64_t> desired_;  // socket -> generation (the kubelet: a timestamp)
  std::map<std::string, Registered> actual_;
  std::set<std::string> in_flight_;
  std::map<std::string, Backoff> backoff_;
  std::vector<std::shared_ptr<DraPlugin>> store_;  // in registration order
};

bool IsSocket(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// The plugin watcher: inotify first, then the scan, so no socket is missed.
void Watch(Kubelet& kubelet, const std::string& dir) {
  const int fd = inotify_init1(IN_CLOEXEC);
  if (fd < 0 || inotify_add_watch(fd, dir.c_str(), IN_CREATE | IN_MOVED_TO | IN_DELETE) < 0) {
    Log("cannot watch " + dir);
    Exit(1);
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(".") && IsSocket(entry.path().string())) {
      kubelet.SocketCreated(entry.path().string());
    }
  }
  std::thread([&kubelet, dir, fd] {
    alignas(inotify_event) char buf[16384];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        Log("inotify read failed");
        Exit(1);
      }
      for (ssize_t off = 0; off < n;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
        off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        if (ev->mask & IN_Q_OVERFLOW) Log("inotify queue overflow: events lost");
        if (ev->len == 0) continue;
        const std::string name = ev->name;
        const std::string path = dir + "/" + name;
        // fsnotify's Create (IN_CREATE, IN_MOVED_TO) and Remove (IN_DELETE); the kubelet
        // ignores Rename (IN_MOVED_FROM).
        if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
          if (!name.starts_with(".") && IsSocket(path)) kubelet.SocketCreated(path);
        } else if (ev->mask & IN_DELETE) {
          kubelet.SocketDeleted(path);
        }
      }
    }
  }).detach();
}

struct ClaimArg {
  std::string ns, name, uid;
};

// The command's "claims" (absent: none, as in the example driver's health probe).
bool ParseClaims(simdjson::dom::object cmd, std::vector<ClaimArg>* out, std::string* error) {
  simdjson::dom::element claims;
  if (cmd["claims"].get(claims)) return true;
  simdjson::dom::array list;
  if (claims.get(list)) {
    *error = "claims: want an array";
    return false;
  }
  for (simdjson::dom::element item : list) {
    simdjson::dom::object c;
    if (item.get(c)) {
      *error = "claims: want objects";
      return false;
    }
    ClaimArg arg;
    const std::pair<const char*, std::string*> fields[] = {
        {"namespace", &arg.ns}, {"name", &arg.name}, {"uid", &arg.uid}};
    for (const auto& [key, field] : fields) {
      simdjson::dom::element v;
      if (c[key].get(v)) continue;  // missing: sent empty
      std::string_view s;
      if (v.get(s)) {
        *error = absl::StrCat("claims: ", key, ": want a string");
        return false;
      }
      field->assign(s);
    }
    out->push_back(std::move(arg));
  }
  return true;
}

template <typename Request>
Request BuildRequest(const std::vector<ClaimArg>& claims) {
  Request req;
  for (const auto& c : claims) {
    auto* claim = req.add_claims();
    claim->set_namespace_(c.ns);
    claim->set_name(c.name);
    claim->set_uid(c.uid);
  }
  return req;
}

template <typename Device>
void WriteDevice(pcid::JsonWriter& json, const Device& d) {
  json.BeginObject().Key("requestNames").BeginArray();
  for (const auto& r : d.request_names()) json.String(r);
  json.EndArray().Key("poolName").String(d.pool_name()).Key("deviceName").String(d.device_name());
  json.Key("cdiDeviceIds").BeginArray();
  for (const auto& id : d.cdi_device_ids()) json.String(id);
  json.EndArray();
  if constexpr (requires { d.has_share_id(); }) {
    if (d.has_share_id()) json.Key("shareId").String(d.share_id());
  }
  json.EndObject();
}

// The claims of an answer, keyed by UID in sorted order (a protobuf map has none).
template <typename Map>
std::map<std::string, const typename Map::mapped_type*> Sorted(const Map& m) {
  std::map<std::string, const typename Map::mapped_type*> out;
  for (const auto& [uid, r] : m) out[uid] = &r;
  return out;
}

void WriteClaim(pcid::JsonWriter& json, const drav1::NodePrepareResourceResponse& r) {
  json.BeginObject().Key("error").String(r.error()).Key("devices").BeginArray();
  for (const auto& d : r.devices()) WriteDevice(json, d);
  json.EndArray().EndObject();
}
void WriteClaim(pcid::JsonWriter& json, const drav1beta1::NodePrepareResourceResponse& r) {
  json.BeginObject().Key("error").String(r.error()).Key("devices").BeginArray();
  for (const auto& d : r.devices()) WriteDevice(json, d);
  json.EndArray().EndObject();
}
template <typename R>
void WriteClaim(pcid::JsonWriter& json, const R& r) {  // unprepare
  json.BeginObject().Key("error").String(r.error()).EndObject();
}

// The services' types, one struct per API version.
struct V1 {
  static constexpr const char* kName = "v1";
  using Stub = drav1::DRAPlugin::Stub;
  using PrepareRequest = drav1::NodePrepareResourcesRequest;
  using PrepareResponse = drav1::NodePrepareResourcesResponse;
  using UnprepareRequest = drav1::NodeUnprepareResourcesRequest;
  using UnprepareResponse = drav1::NodeUnprepareResourcesResponse;
  static Stub& Of(DraPlugin& p) { return *p.v1; }
};
struct V1beta1 {
  static constexpr const char* kName = "v1beta1";
  using Stub = drav1beta1::DRAPlugin::Stub;
  using PrepareRequest = drav1beta1::NodePrepareResourcesRequest;
  using PrepareResponse = drav1beta1::NodePrepareResourcesResponse;
  using UnprepareRequest = drav1beta1::NodeUnprepareResourcesRequest;
  using UnprepareResponse = drav1beta1::NodeUnprepareResourcesResponse;
  static Stub& Of(DraPlugin& p) { return *p.v1beta1; }
};

template <typename V, bool kPrepare>
grpc::Status Call(DraPlugin& p, const std::vector<ClaimArg>& claims, double* ms,
                  std::conditional_t<kPrepare, typename V::PrepareResponse,
                                     typename V::UnprepareResponse>* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(kCallTimeout));
  if constexpr (kPrepare) {
    const auto req = BuildRequest<typename V::PrepareRequest>(claims);
    const auto start = Clock::now();
    grpc::Status st = V::Of(p).NodePrepareResources(&ctx, req, resp);
    *ms = MsSince(start, Clock::now());
    return st;
  } else {
    const auto req = BuildRequest<typename V::UnprepareRequest>(claims);
    const auto start = Clock::now();
    grpc::Status st = V::Of(p).NodeUnprepareResources(&ctx, req, resp);
    *ms = MsSince(start, Clock::now());
    return st;
  }
}

template <typename V, bool kPrepare>
void RunOnce(pcid::JsonWriter& json, DraPlugin& p, const std::vector<ClaimArg>& claims) {
  std::conditional_t<kPrepare, typename V::PrepareResponse, typename V::UnprepareResponse> resp;
  double ms = 0;
  const grpc::Status st = Call<V, kPrepare>(p, claims, &ms, &resp);
  json.Key("ok").Bool(st.ok()).Key("version").String(V::kName).Key("endpoint").String(p.endpoint);
  if (!st.ok()) {
    json.Key("grpcCode").Int(st.error_code()).Key("message").String(st.error_message());
  } else {
    json.Key("claims").BeginObject();
    for (const auto& [uid, r] : Sorted(resp.claims())) {
      json.Key(uid);
      WriteClaim(json, *r);
    }
    json.EndObject();
  }
  json.EndObject();
  Emit(json, Ms("ms", ms));
}

// NodePrepareResources `count` times with the same claims: the kubelet's idempotent retries.
template <typename V>
void RunBench(pcid::JsonWriter& json, DraPlugin& p, const std::vector<ClaimArg>& claims,
              int64_t count) {
  const auto req = BuildRequest<typename V::PrepareRequest>(claims);
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(count));
  int64_t failures = 0;
  std::string first_error;
  for (int64_t i = 0; i < count; ++i) {
    typename V::PrepareResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(kCallTimeout));
    const auto start = Clock::now();
    const grpc::Status st = V::Of(p).NodePrepareResources(&ctx, req, &resp);
    ms.push_back(MsSince(start, Clock::now()));
    std::string error;
    if (!st.ok()) {
      error = absl::StrCat("grpc code ", st.error_code(), ": ", st.error_message());
    } else {
      for (const auto& c : claims) {
        auto it = resp.claims().find(c.uid);
        if (it == resp.claims().end()) {
          error = absl::StrCat("claim ", c.uid, " missing from the answer");
        } else if (!it->second.error().empty()) {
          error = absl::StrCat("claim ", c.uid, ": ", it->second.error());
        }
        if (!error.empty()) break;
      }
    }
    if (!error.empty()) {
      ++failures;
      if (first_error.empty()) first_error = error;
    }
  }
  json.Key("ok").Bool(failures == 0).Key("count").Int(count).Key("failures").Int(failures);
  json.Key("version").String(V::kName).Key("endpoint").String(p.endpoint);
  if (!first_error.empty()) json.Key("firstError").String(first_error);
  json.EndObject();
  std::string raw;
  if (!ms.empty()) {
    double sum = 0;
    for (double m : ms) sum += m;
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const auto rank = [&](double q) {  // nearest rank
      const auto k = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
      return sorted[std::max<size_t>(k, 1) - 1];
    };
    raw = absl::StrCat(Ms("min", sorted.front()), Ms("mean", sum / static_cast<double>(ms.size())),
                       Ms("p50", rank(0.50)), Ms("p99", rank(0.99)), Ms("max", sorted.back()));
  }
  Emit(json, raw);
}

void Command(Kubelet& kubelet, const std::string& line) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::dom::object cmd;
  std::string_view op;
  pcid::JsonWriter json;
  json.BeginObject();
  const auto bad = [&](const std::string& message) {
    json.Key("ok").Bool(false).Key("message").String(message).EndObject();
    Emit(json);
  };
  if (parser.parse(line).get(doc) || doc.get(cmd)) {
    json.Key("op").String("");
    return bad("not a JSON object");
  }
  if (cmd["op"].get(op)) {
    json.Key("op").String("");
    return bad("no \"op\" string");
  }
  json.Key("op").String(op);
  if (op == "quit") Exit(0);
  if (op == "status") {
    kubelet.Status(json);
    json.EndObject();
    return Emit(json);
  }
  if (op != "prepare" && op != "unprepare" && op != "bench") return bad("unknown op");
  std::vector<ClaimArg> claims;
  std::string error;
  if (!ParseClaims(cmd, &claims, &error)) return bad(error);
  std::string_view version;
  if (const auto err = cmd["version"].get(version); err == simdjson::NO_SUCH_FIELD) {
    version = "";
  } else if (err || (version != "v1" && version != "v1beta1")) {
    return bad("version: want \"v1\" or \"v1beta1\"");
  }
  int64_t count = 0;
  if (op == "bench" && (cmd["count"].get(count) || count < 1)) {
    return bad("count: want a positive integer");
  }
  auto plugin = kubelet.Pick();
  if (!plugin) return bad(absl::StrCat("DRA driver ", kubelet.driver(), " is not registered"));
  if (version.empty()) version = plugin->service == kServiceV1 ? "v1" : "v1beta1";
  const bool v1 = version == "v1";
  if (op == "prepare") {
    v1 ? RunOnce<V1, true>(json, *plugin, claims) : RunOnce<V1beta1, true>(json, *plugin, claims);
  } else if (op == "unprepare") {
    v1 ? RunOnce<V1, false>(json, *plugin, claims) : RunOnce<V1beta1, false>(json, *plugin, claims);
  } else {
    v1 ? RunBench<V1>(json, *plugin, claims, count)
       : RunBench<V1beta1>(json, *plugin, claims, count);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string kubelet_dir;
  std::string driver = "pcidevices.io";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--kubelet-dir") {
      kubelet_dir = argv[i + 1];
    } else if (flag == "--driver") {
      driver = argv[i + 1];
    } else {
      kubelet_dir.clear();
      break;
    }
  }
  if (kubelet_dir.empty() || argc % 2 == 0) {
    std::cerr << "usage: dra_kubelet_emulator --kubelet-dir DIR [--driver NAME]\n";
    return 2;
  }
  // SIGTERM and SIGINT are taken by one thread; every thread started later (gRPC's too)
  // inherits the mask.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::thread([stop] {
    int sig = 0;
    sigwait(&stop, &sig);
    Log(absl::StrCat("signal ", sig, ": exiting"));
    Exit(0);
  }).detach();

  const std::string dir = kubelet_dir + "/plugins_registry";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    Log("cannot create " + dir + ": " + ec.message());
    return 1;
  }
  // Never destroyed: its threads run until the process ends.
  auto* kubelet = new Kubelet(driver);
  Watch(*kubelet, dir);
  std::thread([kubelet] { kubelet->Reconcile(); }).detach();
  Emit(pcid::JsonWriter()
           .BeginObject()
           .Key("event")
           .String("ready")
           .Key("dir")
           .String(dir)
           .Key("driver")
           .String(driver)
           .EndObject());
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Command(*kubelet, line);
  }
  Exit(0);
}
