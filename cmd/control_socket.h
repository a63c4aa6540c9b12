// File: cmd/control_socket.h
//
// The daemon's control socket (`<state-dir>/control.sock`, mode 0600): how `pcidevices
// enable|disable` reaches a running daemon, so that one process owns a node's devices. One
// request line in ("enable [--force] ADDRESS..."), reply lines out ("ok ..." / "error ..."), then
// the connection closes. Requests are served on the daemon's owner thread, one at a time.
#pragma once

#include <absl/status/statusor.h>

#include <functional>
#include <string>
#include <vector>

#include "core/unique_fd.h"

namespace pcid::cmd {

class ControlServer {
 public:
  // Listens on `path` (a stale socket file is replaced: the state lock, taken before, proves
  // no other daemon is running).
  static absl::StatusOr<ControlServer> Listen(const std::string& path);

  ControlServer(ControlServer&&) = default;
  ControlServer& operator=(ControlServer&&) = default;
  ~ControlServer();  // removes the socket file: `pcidevices enable` then acts directly

  int fd() const { return fd_.get(); }
  // Accepts one waiting client, reads its request (at most 4 KiB, 2 s), answers with
  // `handle(request)`'s lines. Errors concern that client only and are returned for logging.
  absl::Status ServeOne(const std::function<std::vector<std::string>(std::string_view)>& handle);

 private:
  ControlServer(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

// Where a daemon with state directory `state_dir` listens.
inline std::string ControlSocketPath(const std::string& state_dir) {
  return state_dir + "/control.sock";
}

// Sends `request` to the daemon at `path` and returns its reply lines. Unavailable when no daemon
// listens there (no socket, or a stale one); the caller then acts directly. `timeout` bounds the
// wait for the reply (enabling a device can take the kernel seconds).
absl::StatusOr<std::vector<std::string>> CallDaemon(const std::string& path,
                                                    const std::string& request, int timeout_ms);

}  // namespace pcid::cmd
