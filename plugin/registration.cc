#include "plugin/registration.h"

#include <absl/strings/str_cat.h>
#include <deviceplugin/v1beta1/api.grpc.pb.h>
#include <grpcpp/grpcpp.h>

#include <memory>

namespace pcid::plugin {

namespace {

// A channel of its own to a unix socket. gRPC shares subchannels (and their reconnect back-off)
// between channels to the same address; after a kubelet restart that shared back-off delayed
// registration by a whole second.
std::shared_ptr<grpc::Channel> LocalChannel(const std::string& socket) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  return grpc::CreateCustomChannel("unix://" + socket, grpc::InsecureChannelCredentials(), args);
}

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
