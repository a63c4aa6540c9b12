#include "plugin/client_queue.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstring>
#include <future>
#include <string>
#include <thread>

#include "plugin/registration.h"
#include "unit/temp_tree.h"

namespace pcid::plugin {
namespace {

using namespace std::chrono_literals;
using testing::TempTree;

// A kubelet that hangs: its socket accepts connections (the kernel's backlog does) and nothing
// ever answers.
class SilentSocket {
 public:
  explicit SilentSocket(std::string path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    BOOST_TEST_REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    BOOST_TEST_REQUIRE(::listen(fd_, 64) == 0);
  }
  ~SilentSocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

BOOST_AUTO_TEST_SUITE(client_queue)

BOOST_AUTO_TEST_CASE(a_call_runs_on_the_queue_thread_and_its_failure_names_the_socket) {
  TempTree dir;
  const std::string socket = dir.path() + "/kubelet.sock";  // nothing listens
  ClientQueue queue;
  std::promise<std::pair<absl::Status, std::thread::id>> answer;
  RegisterAsync(queue, {socket, "gpu.sock", "example.com/gpu", 2s}, [&](absl::Status st) {
    answer.set_value({std::move(st), std::this_thread::get_id()});
  });
  auto got = answer.get_future();
  BOOST_TEST_REQUIRE((got.wait_for(10s) == std::future_status::ready));
  const auto [status, thread] = got.get();
  BOOST_TEST(!status.ok());
  BOOST_TEST(std::string(status.message()).find("example.com/gpu: Register with " + socket) !=
                 std::string::npos,
             status.message());
  BOOST_TEST((thread != std::this_thread::get_id()));
}

BOOST_AUTO_TEST_CASE(destroying_the_queue_ends_every_call_once_without_waiting_for_deadlines) {
  TempTree dir;
  SilentSocket kubelet(dir.path() + "/kubelet.sock");
  constexpr int kCalls = 24;
  std::atomic<int> done{0}, cancelled{0};
  const auto t0 = std::chrono::steady_clock::now();
  {
    ClientQueue queue;
    for (int i = 0; i < kCalls; ++i) {
      // Half of them may still be waiting for the queue's thread when the queue closes.
      if (i == kCalls / 2) std::this_thread::sleep_for(50ms);
      RegisterAsync(queue, {kubelet.path(), "gpu.sock", "example.com/gpu", 60s},
                    [&](absl::Status st) {
                      ++done;
                      if (st.code() == absl::StatusCode::kCancelled) ++cancelled;
                    });
    }
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  BOOST_TEST(done.load() == kCalls);
  BOOST_TEST(cancelled.load() == kCalls);
  BOOST_TEST((took < 10s), "the queue waited for its calls' 60 s deadline");
}

BOOST_AUTO_TEST_CASE(an_idle_queue_closes_at_once) {
  const auto t0 = std::chrono::steady_clock::now();
  { ClientQueue queue; }
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 5s));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::plugin
