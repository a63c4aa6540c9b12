// clang-format off
// A kubelet emulator for end-to-end tests, speaking the real device-plugin wire protocol.
//
//   kubelet_emulator --dir DEVICE_PLUGIN_DIR [--pod-resources SOCKET]
//
// Serves `/v1beta1.Registration/Register` on DIR/kubelet.sock. While a Register call is in flight
// it dials the plugin back at DIR/<endpoint> and calls GetDevicePluginOptions (as kubelets do),
// then opens ListAndWatch. Events go to stdout as JSON lines stamped with "t_us" (wall clock,
// microseconds); commands come on stdin, one a line:
//   allocate RESOURCE ID[,ID...] [POD]   -> {"event":"allocate",...} (envs, devices or an error,
//                                           and the call's duration "elapsed_us"); on success the
//                                           devices are held by POD's container "compute" in the
//                                           PodResources answers (namespace "default")
//   delete POD                           -> the pod is gone: its devices leave PodResources
//   hold POD RESOURCE ID[,ID...]         -> POD holds devices of another plugin (SR-IOV network
//                                           VFs, named by address) in PodResources
//   preferred RESOURCE AVAIL MUST SIZE   -> {"event":"preferred",...} (comma-joined; "-" = none)
//   prestart RESOURCE ID[,ID...]         -> {"event":"prestart",...}
//   lists                                -> {"event":"lists","count":N}: PodResources List calls
//   restart                              -> stop, delete every socket in DIR, listen again
//   quit
// clang-format on
#include <absl/strings/str_split.h>
#include <deviceplugin/v1beta1/api.grpc.pb.h>
#include <grpcpp/grpcpp.h>
#include <podresources/v1/api.grpc.pb.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/json_writer.h"

namespace {

std::mutex out_mu;
// Prints one event line, stamped with the wall clock in microseconds ("t_us"), so tests can
// measure latencies against their own clock.
void Emit(const pcid::JsonWriter& json) {
  const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  std::string line = json.str();
  line.insert(line.size() - 1, ",\"t_us\":" + std::to_string(now));
  std::lock_guard<std::mutex> lock(out_mu);
  std::cout << line << std::endl;
}

void EmitStatus(pcid::JsonWriter& json, const grpc::Status& status) {
  json.Key("ok").Bool(status.ok());
  if (!status.ok()) {
    json.Key("code").Int(status.error_code());
    json.Key("message").String(status.error_message());
  }
}

// One registered plugin: its channel and the ListAndWatch reader thread.
struct Plugin {
  std::string resource;
  std::string endpoint;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1beta1::DevicePlugin::Stub> stub;
  grpc::ClientContext watch_ctx;
  std::thread watcher;

  ~Plugin() {
    watch_ctx.TryCancel();
    if (watcher.joinable()) watcher.join();
  }
};

class Kubelet {
 public:
  explicit Kubelet(std::string dir) : dir_(std::move(dir)) {}

  std::string Register(const v1beta1::RegisterRequest& req) {
    if (req.version() != "v1beta1") return "unsupported version " + req.version();
    auto plugin = std::make_unique<Plugin>();
    plugin->resource = req.resource_name();
    plugin->endpoint = req.endpoint();
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // no back-off shared with old plugins
    plugin->channel = grpc::CreateCustomChannel("unix://" + dir_ + "/" + req.endpoint(),
                                                grpc::InsecureChannelCredentials(), args);
    plugin->stub = v1beta1::DevicePlugin::NewStub(plugin->channel);
    // Dial back while Register is in flight: the plugin must already be serving.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1beta1::DevicePluginOptions options;
    const grpc::Status st = plugin->stub->GetDevicePluginOptions(&ctx, v1beta1::Empty(), &options);
    pcid::JsonWriter json;
    json.BeginObject().Key("event").String("register").Key("resource").String(req.resource_name());
    json.Key("endpoint").String(req.endpoint());
    json.Key("pre_start_required").Bool(options.pre_start_required());
    json.Key("preferred_allocation").Bool(options.get_preferred_allocation_available());
    EmitStatus(json, st);
    json.EndObject();
    Emit(json);
    if (!st.ok()) return "dial back failed: " + st.error_message();

    Plugin* p = plugin.get();
    p->watcher = std::thread([p] {
      auto reader = p->stub->ListAndWatch(&p->watch_ctx, v1beta1::Empty());
      v1beta1::ListAndWatchResponse resp;
      while (reader->Read(&resp)) {
        pcid::JsonWriter json;
        json.BeginObject().Key("event").String("list").Key("resource").String(p->resource);
        json.Key("devices").BeginArray();
        for (const auto& d : resp.devices()) {
          json.BeginObject().Key("id").String(d.id()).Key("health").String(d.health());
          json.Key("numa").BeginArray();
          for (const auto& n : d.topology().nodes()) json.Int(n.id());
          json.EndArray().EndObject();
        }
        json.EndArray().EndObject();
        Emit(json);
      }
      const grpc::Status end = reader->Finish();
      pcid::JsonWriter json;
      json.BeginObject().Key("event").String("stream_closed").Key("resource").String(p->resource);
      EmitStatus(json, end);
      json.EndObject();
      Emit(json);
    });
    std::lock_guard<std::mutex> lock(mu_);
    plugins_[req.resource_name()] = std::move(plugin);  // a re-registration replaces the old one
    return "";
  }

  Plugin* Find(const std::string& resource) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = plugins_.find(resource);
    return it == plugins_.end() ? nullptr : it->second.get();
  }

  void DropAll() {
    std::map<std::string, std::unique_ptr<Plugin>> old;
    {
      std::lock_guard<std::mutex> lock(mu_);
      old.swap(plugins_);
    }
  }

 private:
  std::string dir_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Plugin>> plugins_;
};

// Pods and the devices their single container holds, as PodResources reports them.
class Pods {
 public:
  void Hold(const std::string& pod, const std::string& resource,
            const std::vector<std::string>& ids) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& held = pods_[pod][resource];
    held.insert(held.end(), ids.begin(), ids.end());
  }
  void Delete(const std::string& pod) {
    std::lock_guard<std::mutex> lock(mu_);
    pods_.erase(pod);
  }
  void Fill(v1::ListPodResourcesResponse* out) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [pod, resources] : pods_) {
      auto* p = out->add_pod_resources();
      p->set_name(pod);
      p->set_namespace_("default");
      auto* c = p->add_containers();
      c->set_name("compute");
      for (const auto& [resource, ids] : resources) {
        auto* d = c->add_devices();
        d->set_resource_name(resource);
        for (const auto& id : ids) d->add_device_ids(id);
      }
    }
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::map<std::string, std::vector<std::string>>> pods_;
};

class PodResourcesService : public v1::PodResourcesLister::CallbackService {
 public:
  explicit PodResourcesService(Pods* pods) : pods_(pods) {}
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx,
                                 const v1::ListPodResourcesRequest*,
                                 v1::ListPodResourcesResponse* out) override {
    pods_->Fill(out);
    ++lists;
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  std::atomic<int> lists{0};

 private:
  Pods* pods_;
};

class RegistrationService : public v1beta1::Registration::CallbackService {
 public:
  explicit RegistrationService(Kubelet* kubelet) : kubelet_(kubelet) {}
  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const v1beta1::RegisterRequest* req,
                                     v1beta1::Empty*) override {
    auto* reactor = ctx->DefaultReactor();
    // The dial-back blocks; run it off gRPC's callback thread. JoinAll() waits for these before
    // the server is shut down: Finish on a call the server already dropped would be a crash.
    std::lock_guard<std::mutex> lock(mu_);
    threads_.emplace_back([this, reactor, req] {
      const std::string err = kubelet_->Register(*req);
      reactor->Finish(err.empty() ? grpc::Status::OK
                                  : grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, err));
    });
    return reactor;
  }

  void JoinAll() {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

 private:
  std::mutex mu_;
  std::vector<std::thread> threads_;
  Kubelet* kubelet_;
};

std::vector<std::string> Ids(const std::string& arg) {
  if (arg == "-") return {};
  return absl::StrSplit(arg, ',');
}

std::unique_ptr<grpc::Server> Listen(const std::string& dir, RegistrationService* service) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix://" + dir + "/kubelet.sock", grpc::InsecureServerCredentials());
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

void Command(Kubelet& kubelet, Pods& pods, const std::vector<std::string>& words) {
  pcid::JsonWriter json;
  json.BeginObject().Key("event").String(words[0]);
  if (words[0] == "delete" && words.size() == 2) {
    pods.Delete(words[1]);
    json.Key("pod").String(words[1]).Key("ok").Bool(true).EndObject();
    Emit(json);
    return;
  }
  if (words[0] == "hold" && words.size() == 4) {
    pods.Hold(words[1], words[2], Ids(words[3]));
    json.Key("pod").String(words[1]).Key("ok").Bool(true).EndObject();
    Emit(json);
    return;
  }
  Plugin* p = words.size() > 1 ? kubelet.Find(words[1]) : nullptr;
  if (words.size() > 1) json.Key("resource").String(words[1]);
  if (p == nullptr) {
    json.Key("ok").Bool(false).Key("message").String("no such plugin").EndObject();
    Emit(json);
    return;
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (words[0] == "allocate" && (words.size() == 3 || words.size() == 4)) {
    v1beta1::AllocateRequest req;
    auto* container = req.add_container_requests();  // all IDs for one container
    for (const auto& id : Ids(words[2])) container->add_devices_ids(id);
    v1beta1::AllocateResponse resp;
    const auto start = std::chrono::steady_clock::now();
    const grpc::Status st = p->stub->Allocate(&ctx, req, &resp);
    json.Key("elapsed_us")
        .Int(std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::steady_clock::now() - start)
                 .count());
    EmitStatus(json, st);
    if (st.ok() && words.size() == 4) pods.Hold(words[3], words[1], Ids(words[2]));
    json.Key("containers").BeginArray();
    for (const auto& c : resp.container_responses()) {
      json.BeginObject().Key("envs").BeginObject();
      std::map<std::string, std::string> envs(c.envs().begin(), c.envs().end());
      for (const auto& [k, v] : envs) json.Key(k).String(v);
      json.EndObject().Key("devices").BeginArray();
      for (const auto& d : c.devices()) {
        json.BeginObject().Key("host_path").String(d.host_path());
        json.Key("container_path").String(d.container_path());
        json.Key("permissions").String(d.permissions()).EndObject();
      }
      json.EndArray().Key("mounts").Int(c.mounts_size()).EndObject();
    }
    json.EndArray();
  } else if (words[0] == "preferred" && words.size() == 5) {
    v1beta1::PreferredAllocationRequest req;
    auto* c = req.add_container_requests();
    for (const auto& id : Ids(words[2])) c->add_available_deviceids(id);
    for (const auto& id : Ids(words[3])) c->add_must_include_deviceids(id);
    c->set_allocation_size(std::stoi(words[4]));
    v1beta1::PreferredAllocationResponse resp;
    const grpc::Status st = p->stub->GetPreferredAllocation(&ctx, req, &resp);
    EmitStatus(json, st);
    json.Key("ids").BeginArray();
    for (const auto& r : resp.container_responses()) {
      for (const auto& id : r.deviceids()) json.String(id);
    }
    json.EndArray();
  } else if (words[0] == "prestart" && words.size() == 3) {
    v1beta1::PreStartContainerRequest req;
    for (const auto& id : Ids(words[2])) req.add_devices_ids(id);
    v1beta1::PreStartContainerResponse resp;
    EmitStatus(json, p->stub->PreStartContainer(&ctx, req, &resp));
  } else {
    json.Key("ok").Bool(false).Key("message").String("bad command");
  }
  json.EndObject();
  Emit(json);
}

}  // namespace

int main(int argc, char** argv) {
  if ((argc != 3 && argc != 5) || std::string(argv[1]) != "--dir" ||
      (argc == 5 && std::string(argv[3]) != "--pod-resources")) {
    std::cerr << "usage: kubelet_emulator --dir DEVICE_PLUGIN_DIR [--pod-resources SOCKET]\n";
    return 2;
  }
  const std::string dir = argv[2];
  Pods pods;
  PodResourcesService pod_service(&pods);
  std::unique_ptr<grpc::Server> pod_server;
  if (argc == 5) {
    std::filesystem::remove(argv[4]);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(std::string("unix://") + argv[4], grpc::InsecureServerCredentials());
    builder.RegisterService(&pod_service);
    pod_server = builder.BuildAndStart();
    if (!pod_server) {
      std::cerr << "cannot listen on " << argv[4] << "\n";
      return 1;
    }
  }
  Kubelet kubelet(dir);
  RegistrationService service(&kubelet);
  std::filesystem::remove(dir + "/kubelet.sock");
  auto server = Listen(dir, &service);
  if (!server) {
    std::cerr << "cannot listen on " << dir << "/kubelet.sock\n";
    return 1;
  }
  Emit(pcid::JsonWriter().BeginObject().Key("event").String("ready").EndObject());
  std::string line;
  while (std::getline(std::cin, line)) {
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.empty()) continue;
    if (words[0] == "quit") break;
    if (words[0] == "restart") {
      // A kubelet restart: it stops, its plugin connections go, and it wipes the directory.
      service.JoinAll();
      server->Shutdown(std::chrono::system_clock::now());
      server->Wait();
      kubelet.DropAll();
      for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        if (entry.is_socket()) std::filesystem::remove(entry.path());
      }
      server = Listen(dir, &service);
      Emit(pcid::JsonWriter().BeginObject().Key("event").String("restarted").EndObject());
      continue;
    }
    if (words[0] == "lists") {  // how many PodResources List calls were answered
      Emit(pcid::JsonWriter()
               .BeginObject()
               .Key("event")
               .String("lists")
               .Key("count")
               .Int(pod_service.lists.load())
               .EndObject());
      continue;
    }
    Command(kubelet, pods, words);
  }
  service.JoinAll();
  server->Shutdown(std::chrono::system_clock::now());
  if (pod_server) pod_server->Shutdown(std::chrono::system_clock::now());
  kubelet.DropAll();
  return 0;
}
