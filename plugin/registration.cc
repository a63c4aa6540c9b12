#include "plugin/registration.h"

#include <absl/strings/str_cat.h>
#include <deviceplugin/v1beta1/api.grpc.pb.h>
#include <grpcpp/grpcpp.h>

#include <memory>

namespace pcid::plugin {

void RegisterAsync(const RegistrationRequest& request, std::function<void(absl::Status)> done) {
  // Everything the call needs lives until its callback has run.
  struct Call {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1beta1::Registration::Stub> stub;
    grpc::ClientContext context;
    v1beta1::RegisterRequest req;
    v1beta1::Empty resp;
    std::function<void(absl::Status)> done;
    std::string what;
  };
  auto call = std::make_shared<Call>();
  call->channel =
      grpc::CreateChannel("unix://" + request.kubelet_socket, grpc::InsecureChannelCredentials());
  call->stub = v1beta1::Registration::NewStub(call->channel);
  call->context.set_deadline(std::chrono::system_clock::now() + request.timeout);
  call->req.set_version("v1beta1");
  call->req.set_endpoint(request.endpoint);
  call->req.set_resource_name(request.resource_name);
  call->req.mutable_options()->set_pre_start_required(true);
  call->req.mutable_options()->set_get_preferred_allocation_available(true);
  call->done = std::move(done);
  call->what = absl::StrCat(request.resource_name, ": Register with ", request.kubelet_socket);
  call->stub->async()->Register(
      &call->context, &call->req, &call->resp, [call](grpc::Status status) {
        if (status.ok()) {
          call->done(absl::OkStatus());
        } else {
          call->done(absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                                  absl::StrCat(call->what, ": ", status.error_message())));
        }
      });
}

}  // namespace pcid::plugin
