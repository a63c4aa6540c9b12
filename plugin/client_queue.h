// File: plugin/client_queue.h
//
// Our gRPC client calls to the kubelet (Register, PodResources List) start and complete on one
// completion queue owned here, waited on by one thread without a timeout: while no call is in
// flight nothing wakes up. (gRPC 1.51's callback API polls its shared queue every second from two
// threads, the only periodic wake-ups an idle daemon had.) Calls start on that thread, not the
// caller's: creating a channel and connecting take gRPC's internal locks, which the daemon's
// owner thread would otherwise wait for behind gRPC's own threads.
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/status/status.h>
#include <absl/strings/str_cat.h>
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/mutex.h"

namespace pcid::plugin {

// One unary call in flight: `Finish` of its response reader takes the call itself as the tag and
// writes `status`.
class ClientCall {
 public:
  virtual ~ClientCall() = default;
  // On the queue's thread, once: begins the RPC on `cq` and asks for `Finish` with `this` as the
  // tag.
  virtual void Start(grpc::CompletionQueue* cq) = 0;
  // On the queue's thread, once: ok == false only when the queue shuts down under it (the call
  // may then never have started).
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

  // Hands `call` to the queue's thread, which starts it; the queue owns the call until its Done
  // has run. Returns at once. False when the queue is shutting down (the call is dropped without
  // Done).
  bool Add(std::unique_ptr<ClientCall> call);

 private:
  void Run();
  // On the queue's thread: starts the calls handed over by Add, or ends them when closing; shuts
  // the queue down once closing and no wake-up is left to come.
  void StartHandedOver();

  grpc::CompletionQueue cq_;
  Mutex mu_;
  std::vector<ClientCall*> handed_over_ ABSL_GUARDED_BY(mu_);
  std::set<ClientCall*> calls_ ABSL_GUARDED_BY(mu_);        // started, Done not yet run
  std::unique_ptr<grpc::Alarm> wake_ ABSL_GUARDED_BY(mu_);  // set, not yet delivered
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace pcid::plugin
