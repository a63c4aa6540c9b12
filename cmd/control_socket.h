// File: cmd/control_socket.h
//
// The daemon's control socket (`<state-dir>/control.sock`, mode 0600): how `pcidevices
// enable|disable` reaches a running daemon, so that one process owns a node's devices. One
// request line in ("enable [--force] ADDRESS..."), reply lines out ("ok ..." / "error ..."), then
// the connection closes. Requests are read on the server's own thread and decided by the
// daemon's owner thread, which answers when the kernel has.
#pragma once

#include <absl/status/statusor.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/unique_fd.h"

namespace pcid::cmd {

class ControlServer {
 public:
  // The reply to one request, callable once from any thread; the connection closes after it
  // (or when the reply is dropped unanswered).
  using Reply = std::function<void(std::vector<std::string> lines)>;
  // Called on the server's thread with each request line; answers through `reply`, later.
  using Handler = std::function<void(std::string line, Reply reply)>;

  // Listens on `path` (a stale socket file is replaced: the state lock, taken before, proves
  // no other daemon is running) and serves on a thread of its own: a client that connects and
  // says nothing keeps only that thread waiting (2 s at most), never the daemon's owner thread.
  static absl::StatusOr<std::unique_ptr<ControlServer>> Start(const std::string& path,
                                                              Handler handle);
  ~ControlServer();  // stops the thread; removes the socket file: `pcidevices enable` then acts
                     // directly

 private:
  ControlServer(UniqueFd fd, UniqueFd stop, std::string path, Handler handle);
  void Serve();
  absl::Status ServeOne();

  UniqueFd fd_;
  UniqueFd stop_;  // eventfd: written to end the thread
  std::string path_;
  Handler handle_;
  std::thread thread_;
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
