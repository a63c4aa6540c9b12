#include "plugin/client_queue.h"

#include "plugin/queue_wake.h"

namespace pcid::plugin {

namespace {
// The wake-up alarm's tag; every other tag is a ClientCall.
char wake_tag;
}  // namespace

ClientQueue::ClientQueue() : thread_([this] { Run(); }) {}

ClientQueue::~ClientQueue() {
  {
    MutexLock lock(&mu_);
    closed_ = true;
    // A call cancelled before it starts ends as soon as it does (gRPC keeps the flag).
    for (ClientCall* c : calls_) c->context.TryCancel();
    // The thread shuts the queue down itself, once no call can start any more.
    if (!wake_) wake_ = WakeQueue(&cq_, &wake_tag);
  }
  thread_.join();  // every call's Finish tag is delivered before Next returns false
}

bool ClientQueue::Add(std::unique_ptr<ClientCall> call) {
  MutexLock lock(&mu_);
  if (closed_) return false;
  handed_over_.push_back(call.release());
  if (!wake_) wake_ = WakeQueue(&cq_, &wake_tag);
  return true;
}

void ClientQueue::StartHandedOver() {
  std::unique_ptr<grpc::Alarm> delivered;
  std::vector<ClientCall*> calls;
  bool closed;
  {
    MutexLock lock(&mu_);
    delivered = std::move(wake_);
    calls.swap(handed_over_);
    closed = closed_;
    if (!closed) calls_.insert(calls.begin(), calls.end());
  }
  for (ClientCall* c : calls) {
    if (closed) {
      c->Done(false);
      delete c;
    } else {
      c->Start(&cq_);
    }
  }
  if (closed) {
    // Add takes nothing more, and the destructor has set its wake-up: the queue can shut down.
    cq_.Shutdown();
    return;
  }
  // The destructor may have run while these calls started, seeing wake_ empty: it set a new
  // wake-up, which comes back here with `closed`.
}

void ClientQueue::Run() {
  void* tag;
  bool ok;
  while (cq_.Next(&tag, &ok)) {
    if (tag == &wake_tag) {
      StartHandedOver();
      continue;
    }
    auto* call = static_cast<ClientCall*>(tag);  // started on this thread
    call->Done(ok);
    {
      MutexLock lock(&mu_);
      calls_.erase(call);
    }
    delete call;  // outside the lock: it destroys the call's channel, which takes gRPC's locks
  }
}

}  // namespace pcid::plugin
