#include "plugin/client_queue.h"

namespace pcid::plugin {

ClientQueue::ClientQueue() : thread_([this] { Run(); }) {}

ClientQueue::~ClientQueue() {
  {
    MutexLock lock(&mu_);
    closed_ = true;
    for (ClientCall* c : calls_) c->context.TryCancel();
  }
  cq_.Shutdown();
  thread_.join();  // every call's Finish tag is delivered before Next returns false
}

void ClientQueue::Run() {
  void* tag;
  bool ok;
  while (cq_.Next(&tag, &ok)) {
    auto* call = static_cast<ClientCall*>(tag);
    // The call was started under mu_ (Add). gRPC's queue orders its start before this event, in
    // code ThreadSanitizer cannot see (Debian's gRPC is not instrumented); taking the lock once
    // shows it the same order.
    { MutexLock lock(&mu_); }
    call->Done(ok);
    MutexLock lock(&mu_);
    calls_.erase(call);
    delete call;
  }
}

}  // namespace pcid::plugin
