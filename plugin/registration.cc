#include "plugin/registration.h"

#include <absl/strings/str_cat.h>
#include <deviceplugin/v1beta1/api.grpc.pb.h>

#include <memory>

#include "plugin/local_channel.h"

namespace pcid::plugin {

namespace {

class RegisterCall final : public ClientCall {
 public:
  RegisterCall(const RegistrationRequest& request, std::function<void(absl::Status)> done)
      : done_(std::move(done)),
        what_(absl::StrCat(request.resource_name, ": Register with ", request.kubelet_socket)),
        socket_(request.kubelet_socket) {
    context.set_deadline(std::chrono::system_clock::now() + request.timeout);
    req_.set_version("v1beta1");
    req_.set_endpoint(request.endpoint);
    req_.set_resource_name(request.resource_name);
    req_.mutable_options()->set_pre_start_required(true);
    req_.mutable_options()->set_get_preferred_allocation_available(true);
  }
  void Start(grpc::CompletionQueue* cq) override {
    stub_ = v1beta1::Registration::NewStub(LocalChannel(socket_));
    reader_ = stub_->AsyncRegister(&context, req_, cq);
    reader_->Finish(&resp_, &status, static_cast<ClientCall*>(this));
  }
  void Done(bool ok) override { done_(Outcome(ok, what_)); }

 private:
  std::unique_ptr<v1beta1::Registration::Stub> stub_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1beta1::Empty>> reader_;
  v1beta1::RegisterRequest req_;
  v1beta1::Empty resp_;
  std::function<void(absl::Status)> done_;
  std::string what_;
  std::string socket_;
};

}  // namespace

void RegisterAsync(ClientQueue& queue, const RegistrationRequest& request,
                   std::function<void(absl::Status)> done) {
  queue.Add(std::make_unique<RegisterCall>(request, std::move(done)));
}

}  // namespace pcid::plugin
