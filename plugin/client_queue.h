// File: plugin/client_queue.h
//
// Our gRPC client calls to the kubelet (Register, PodResources List) complete on one completion
// queue owned here, waited on by one thread without a timeout: while no call is in flight
// nothing wakes up. (gRPC 1.51's callback API polls its shared queue every second from two
// threads, the only periodic wake-ups an idle daemon had.)
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/status/status.h>
#include <absl/strings/str_cat.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "core/mutex.h"

namespace pcid::plugin {

// One unary call in flight: `Finish` of its response reader takes the call itself as the tag and
// writes `status`.
class ClientCall {
 public:
  virtual ~ClientCall() = default;
  // On the queue's thread, once: ok == false only when the queue shuts down under it.
  virtual void Done(bool ok) = 0;
  grpc::ClientContext context;
  grpc::Status status;

 protected:
  // What Done's `ok` and `status` say, as an absl::Status naming `what` on failure.
  absl::Status Outcome(bool ok, const std::string& what) const {
    const grpc::Status& st = ok ? status : grpc::Status::CANCELLED;
    if (st.ok()) return absl::OkStatus();
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                        absl::StrCat(what, ": ", st.error_message()));
  }
};

class ClientQueue {
 public:
  ClientQueue();
  // Cancels the calls in flight (their Done runs, with CANCELLED), then stops the thread.
  ~ClientQueue();
  ClientQueue(const ClientQueue&) = delete;
  ClientQueue& operator=(const ClientQueue&) = delete;

  // Starts `call`: `start(cq)` begins the RPC on `cq` and asks for `Finish` with the call as the
  // tag. The queue owns the call until its Done has run. False when the queue is shutting down
  // (the call is dropped without Done).
  template <class Start>
  bool Add(std::unique_ptr<ClientCall> call, Start start) {
    MutexLock lock(&mu_);
    if (closed_) return false;
    ClientCall* c = call.release();
    calls_.insert(c);
    start(&cq_, c);
    return true;
  }

 private:
  void Run();

  grpc::CompletionQueue cq_;
  Mutex mu_;
  std::set<ClientCall*> calls_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace pcid::plugin
