#include "plugin/pod_resources.h"

#include <absl/strings/str_cat.h>
#include <grpcpp/grpcpp.h>
#include <podresources/v1/api.grpc.pb.h>

#include <memory>

#include "plugin/local_channel.h"

namespace pcid::plugin {

namespace {

// One List call; deletes itself in OnDone (see plugin/registration.cc for why a reactor).
class ListCall : public grpc::ClientUnaryReactor {
 public:
  ListCall(const std::string& socket, const std::set<std::string>& resources,
           std::chrono::milliseconds timeout,
           std::function<void(absl::StatusOr<DeviceHolders>)> done)
      : channel_(LocalChannel(socket)),
        stub_(v1::PodResourcesLister::NewStub(channel_)),
        resources_(resources),
        done_(std::move(done)),
        socket_(socket) {
    context_.set_deadline(std::chrono::system_clock::now() + timeout);
    stub_->async()->List(&context_, &req_, &resp_, this);
    StartCall();
  }

  void OnDone(const grpc::Status& status) override {
    if (!status.ok()) {
      done_(absl::Status(
          static_cast<absl::StatusCode>(status.error_code()),
          absl::StrCat("PodResources List on ", socket_, ": ", status.error_message())));
    } else {
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
    delete this;
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PodResourcesLister::Stub> stub_;
  grpc::ClientContext context_;
  v1::ListPodResourcesRequest req_;
  v1::ListPodResourcesResponse resp_;
  std::set<std::string> resources_;
  std::function<void(absl::StatusOr<DeviceHolders>)> done_;
  std::string socket_;
};

}  // namespace

void ListPodResourcesAsync(const std::string& socket, const std::set<std::string>& resources,
                           std::chrono::milliseconds timeout,
                           std::function<void(absl::StatusOr<DeviceHolders>)> done) {
  new ListCall(socket, resources, timeout, std::move(done));  // deletes itself when done
}

}  // namespace pcid::plugin
