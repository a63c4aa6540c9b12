#include "plugin/registration.h"

#include <absl/strings/str_cat.h>
#include <deviceplugin/v1beta1/api.grpc.pb.h>
#include <grpcpp/grpcpp.h>

#include <memory>

#include "plugin/local_channel.h"

namespace pcid::plugin {

namespace {

// One Register call. A reactor owns its context and may delete itself in OnDone, the last thing
// gRPC calls (a std::function callback that owns the context would free it while gRPC still
// holds the call).
class RegisterCall : public grpc::ClientUnaryReactor {
 public:
  RegisterCall(const RegistrationRequest& request, std::function<void(absl::Status)> done)
      : channel_(LocalChannel(request.kubelet_socket)),
        stub_(v1beta1::Registration::NewStub(channel_)),
        done_(std::move(done)),
        what_(absl::StrCat(request.resource_name, ": Register with ", request.kubelet_socket)) {
    context_.set_deadline(std::chrono::system_clock::now() + request.timeout);
    req_.set_version("v1beta1");
    req_.set_endpoint(request.endpoint);
    req_.set_resource_name(request.resource_name);
    req_.mutable_options()->set_pre_start_required(true);
    req_.mutable_options()->set_get_preferred_allocation_available(true);
    stub_->async()->Register(&context_, &req_, &resp_, this);
    StartCall();
  }

  void OnDone(const grpc::Status& status) override {
    if (status.ok()) {
      done_(absl::OkStatus());
    } else {
      done_(absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                         absl::StrCat(what_, ": ", status.error_message())));
    }
    delete this;
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1beta1::Registration::Stub> stub_;
  grpc::ClientContext context_;
  v1beta1::RegisterRequest req_;
  v1beta1::Empty resp_;
  std::function<void(absl::Status)> done_;
  std::string what_;
};

}  // namespace

void RegisterAsync(const RegistrationRequest& request, std::function<void(absl::Status)> done) {
  new RegisterCall(request, std::move(done));  // deletes itself when done
}

}  // namespace pcid::plugin
