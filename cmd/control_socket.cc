#include "cmd/control_socket.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_split.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/status.h"

namespace pcid::cmd {
namespace {

constexpr size_t kMaxRequest = 4096;

absl::StatusOr<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": socket path too long"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// Reads until EOF or `limit` bytes or the deadline.
absl::StatusOr<std::string> ReadAll(int fd, size_t limit, int timeout_ms, bool until_newline) {
  std::string out;
  char buf[4096];
  while (out.size() < limit) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, "poll control socket");
    if (r == 0) return absl::DeadlineExceededError("no answer in time on the control socket");
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "read control socket");
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (until_newline && out.find('\n') != std::string::npos) break;
  }
  return out;
}

absl::Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "write control socket");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Start(const std::string& path,
                                                                    Handler handle) {
  PCID_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return ErrnoStatus(errno, "socket");
  ::unlink(path.c_str());
  // Created 0600 from the start: no window in which another user could connect.
  const mode_t old = ::umask(0177);
  const int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0) return ErrnoStatus(errno, absl::StrCat("bind ", path));
  if (::listen(fd.get(), 8) != 0) return ErrnoStatus(errno, absl::StrCat("listen ", path));
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop.valid()) return ErrnoStatus(errno, "eventfd");
  return std::unique_ptr<ControlServer>(
      new ControlServer(std::move(fd), std::move(stop), path, std::move(handle)));
}

ControlServer::ControlServer(UniqueFd fd, UniqueFd stop, std::string path, Handler handle)
    : fd_(std::move(fd)),
      stop_(std::move(stop)),
      path_(std::move(path)),
      handle_(std::move(handle)) {
  thread_ = std::thread([this] { Serve(); });
}

ControlServer::~ControlServer() {
  const uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  thread_.join();
  ::unlink(path_.c_str());
}

void ControlServer::Serve() {
  for (;;) {
    pollfd fds[] = {{fd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents & POLLIN) return;
    if (fds[0].revents & POLLIN) {
      // A bad client concerns that client only; the next one is served.
      (void)ServeOne();
    }
  }
}

absl::Status ControlServer::ServeOne() {
  auto client = std::make_shared<UniqueFd>(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!client->valid()) {
    if (errno == EAGAIN || errno == EINTR) return absl::OkStatus();
    return ErrnoStatus(errno, "accept on the control socket");
  }
  PCID_ASSIGN_OR_RETURN(std::string request, ReadAll(client->get(), kMaxRequest, 2000, true));
  const size_t nl = request.find('\n');
  if (nl == std::string::npos) {
    (void)WriteAll(client->get(), "error request too long or not a line\n");
    return absl::InvalidArgumentError("control socket: request too long or not a line");
  }
  request.resize(nl);
  handle_(std::move(request), [client](std::vector<std::string> lines) {
    std::string reply;
    for (const std::string& line : lines) absl::StrAppend(&reply, line, "\n");
    (void)WriteAll(client->get(), reply);
  });
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> CallDaemon(const std::string& path,
                                                    const std::string& request, int timeout_ms) {
  PCID_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus(errno, "socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return absl::UnavailableError(absl::StrCat("no daemon at ", path, ": ", std::strerror(errno)));
  }
  PCID_RETURN_IF_ERROR(WriteAll(fd.get(), request + "\n"));
  PCID_ASSIGN_OR_RETURN(std::string reply, ReadAll(fd.get(), 1 << 20, timeout_ms, false));
  std::vector<std::string> lines = absl::StrSplit(reply, '\n', absl::SkipEmpty());
  return lines;
}

}  // namespace pcid::cmd
