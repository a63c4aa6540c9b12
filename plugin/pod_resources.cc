#include "plugin/pod_resources.h"

#include <absl/strings/str_cat.h>
#include <grpcpp/grpcpp.h>
#include <podresources/v1/api.grpc.pb.h>

#include <memory>

namespace pcid::plugin {

void ListPodResourcesAsync(const std::string& socket, const std::set<std::string>& resources,
                           std::chrono::milliseconds timeout,
                           std::function<void(absl::StatusOr<DeviceHolders>)> done) {
  struct Call {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::PodResourcesLister::Stub> stub;
    grpc::ClientContext context;
    v1::ListPodResourcesRequest req;
    v1::ListPodResourcesResponse resp;
    std::set<std::string> resources;
    std::function<void(absl::StatusOr<DeviceHolders>)> done;
    std::string socket;
  };
  auto call = std::make_shared<Call>();
  call->channel = grpc::CreateChannel("unix://" + socket, grpc::InsecureChannelCredentials());
  call->stub = v1::PodResourcesLister::NewStub(call->channel);
  call->context.set_deadline(std::chrono::system_clock::now() + timeout);
  call->resources = resources;
  call->done = std::move(done);
  call->socket = socket;
  call->stub->async()->List(&call->context, &call->req, &call->resp, [call](grpc::Status status) {
    if (!status.ok()) {
      call->done(absl::Status(
          static_cast<absl::StatusCode>(status.error_code()),
          absl::StrCat("PodResources List on ", call->socket, ": ", status.error_message())));
      return;
    }
    DeviceHolders holders;
    for (const auto& pod : call->resp.pod_resources()) {
      for (const auto& container : pod.containers()) {
        for (const auto& devices : container.devices()) {
          if (!call->resources.count(devices.resource_name())) continue;
          for (const auto& id : devices.device_ids()) {
            holders[id] = absl::StrCat(pod.namespace_(), "/", pod.name(), "/", container.name());
          }
        }
      }
    }
    call->done(std::move(holders));
  });
}

}  // namespace pcid::plugin
