#include "plugin/pod_resources.h"

#include <absl/strings/str_cat.h>
#include <podresources/v1/api.grpc.pb.h>
#include <sys/stat.h>

#include <cerrno>
#include <memory>

#include "plugin/local_channel.h"

namespace pcid::plugin {

namespace {

class ListCall final : public ClientCall {
 public:
  ListCall(const std::string& socket, const std::set<std::string>& resources,
           std::chrono::milliseconds timeout,
           std::function<void(absl::StatusOr<DeviceHolders>)> done)
      : resources_(resources), done_(std::move(done)), socket_(socket) {
    context.set_deadline(std::chrono::system_clock::now() + timeout);
  }
  void Start(grpc::CompletionQueue* cq) override {
    stub_ = v1::PodResourcesLister::NewStub(LocalChannel(socket_));
    reader_ = stub_->AsyncList(&context, req_, cq);
    reader_->Finish(&resp_, &status, static_cast<ClientCall*>(this));
  }
  void Done(bool ok) override {
    if (absl::Status st = Outcome(ok, absl::StrCat("PodResources List on ", socket_)); !st.ok()) {
      done_(st);
      return;
    }
    DeviceHolders holders;
    for (const auto& pod : resp_.pod_resources()) {
      for (const auto& container : pod.containers()) {
        for (const auto& devices : container.devices()) {
          if (!resources_.empty() && !resources_.count(devices.resource_name())) continue;
          for (const auto& id : devices.device_ids()) {
            holders[id] = absl::StrCat(pod.namespace_(), "/", pod.name(), "/", container.name());
          }
        }
      }
    }
    done_(std::move(holders));
  }

 private:
  std::unique_ptr<v1::PodResourcesLister::Stub> stub_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::ListPodResourcesResponse>> reader_;
  v1::ListPodResourcesRequest req_;
  v1::ListPodResourcesResponse resp_;
  std::set<std::string> resources_;
  std::function<void(absl::StatusOr<DeviceHolders>)> done_;
  std::string socket_;
};

}  // namespace

void ListPodResourcesAsync(ClientQueue& queue, const std::string& socket,
                           const std::set<std::string>& resources,
                           std::chrono::milliseconds timeout,
                           std::function<void(absl::StatusOr<DeviceHolders>)> done) {
  struct stat st;
  if (::stat(socket.c_str(), &st) != 0 && errno == ENOENT) {
    done(DeviceHolders{});  // no kubelet on this node: nothing is held
    return;
  }
  auto call = std::make_unique<ListCall>(socket, resources, timeout, std::move(done));
  queue.Add(std::move(call));
}

}  // namespace pcid::plugin
