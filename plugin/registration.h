// File: plugin/registration.h
//
// Registers a device plugin with the kubelet (`/v1beta1.Registration/Register` on kubelet.sock).
// Asynchronous: the caller's thread never waits on a kubelet that does not answer; `done` runs on
// the queue's thread with OK or the failure (DeadlineExceeded for a silent kubelet).
#pragma once

#include <absl/status/status.h>

#include <chrono>
#include <functional>
#include <string>

#include "plugin/client_queue.h"

namespace pcid::plugin {

struct RegistrationRequest {
  std::string kubelet_socket;  // <device-plugin-dir>/kubelet.sock
  std::string endpoint;        // our socket's file name in the same directory
  std::string resource_name;
  std::chrono::milliseconds timeout{5000};
};

void RegisterAsync(ClientQueue& queue, const RegistrationRequest& request,
                   std::function<void(absl::Status)> done);

}  // namespace pcid::plugin
