#include "cmd/logging.h"

#include <fcntl.h>
#include <spdlog/pattern_formatter.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <csignal>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace pcid::cmd {
namespace {

// Everything until EOF.
std::string ReadToEnd(int fd) {
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, n);
  return out;
}

// Both ends of a pipe, closed when done.
struct Pipe {
  int read_end = -1, write_end = -1;
  Pipe() { BOOST_TEST_REQUIRE(::pipe2(&read_end, O_CLOEXEC) == 0); }
  ~Pipe() {
    if (read_end >= 0) ::close(read_end);
    if (write_end >= 0) ::close(write_end);
  }
  std::string ReadAll() {
    ::close(write_end);
    write_end = -1;
    return ReadToEnd(read_end);
  }
};

std::string SpdlogsOwn(const spdlog::details::log_msg& msg) {
  spdlog::pattern_formatter f("%Y-%m-%dT%H:%M:%S.%e %l %n: %v", spdlog::pattern_time_type::utc);
  spdlog::memory_buf_t out;
  f.format(msg, out);
  return std::string(out.data(), out.size());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(logging)

BOOST_AUTO_TEST_CASE(lines_match_spdlogs_pattern_in_utc) {
  using std::chrono::milliseconds;
  const std::vector<spdlog::log_clock::time_point> times = {
      spdlog::log_clock::time_point(milliseconds(1796597577950)),  // 2026-12-06T22:52:57.950
      spdlog::log_clock::time_point(milliseconds(951782400000)),   // 2000-02-29T00:00:00.000
      spdlog::log_clock::time_point(milliseconds(4102444799999)),  // 2099-12-31T23:59:59.999
      // Not in the epoch's first second: spdlog's formatter takes second 0 for its empty cache.
      spdlog::log_clock::time_point(milliseconds(1005)),  // 1970-01-01T00:00:01.005
  };
  for (auto level :
       {spdlog::level::debug, spdlog::level::info, spdlog::level::warn, spdlog::level::err}) {
    for (const auto& t : times) {
      Pipe pipe;
      auto sink = MakeLineSink(pipe.write_end);
      const spdlog::details::log_msg msg(t, spdlog::source_loc{}, "daemon", level,
                                         "pci 0000:01:00.0: on vfio-pci");
      sink->log(msg);
      const std::string line = pipe.ReadAll();
      BOOST_TEST(line == SpdlogsOwn(msg));
    }
  }
  Pipe pipe;
  auto sink = MakeLineSink(pipe.write_end);
  sink->log(spdlog::details::log_msg(times[0], spdlog::source_loc{}, "dra", spdlog::level::info,
                                     "prepared"));
  BOOST_TEST(pipe.ReadAll() == "2026-12-06T22:52:57.950 info dra: prepared\n");
}

BOOST_AUTO_TEST_CASE(concurrent_lines_stay_whole_and_in_order) {
  Pipe pipe;
  std::string got;
  std::thread reader([&, fd = pipe.read_end] { got = ReadToEnd(fd); });
  constexpr int kThreads = 8, kLines = 2000;
  {
    auto sink = MakeLineSink(pipe.write_end);
    std::vector<std::thread> writers;
    for (int t = 0; t < kThreads; ++t) {
      writers.emplace_back([&, t] {
        spdlog::logger log("w" + std::to_string(t), sink);
        for (int i = 0; i < kLines; ++i) log.info("{} {} {}", t, i, std::string(40, 'x'));
      });
    }
    for (auto& w : writers) w.join();
  }
  ::close(pipe.write_end);
  pipe.write_end = -1;
  reader.join();
  std::vector<int> next(kThreads, 0);  // each writer's lines arrive in its order
  size_t start = 0, lines = 0;
  for (size_t nl; (nl = got.find('\n', start)) != std::string::npos; start = nl + 1, ++lines) {
    const std::string line = got.substr(start, nl - start);
    // "YYYY-MM-DDTHH:MM:SS.mmm info wT: T I xxx..."
    int t = -1, i = -1;
    char x[64] = {};
    BOOST_TEST_REQUIRE(std::sscanf(line.c_str() + 23, " info w%*d: %d %d %63s", &t, &i, x) == 3,
                       line);
    BOOST_TEST_REQUIRE((t >= 0 && t < kThreads), line);
    BOOST_TEST(i == next[t], line);
    next[t] = i + 1;
    BOOST_TEST(std::string(x) == std::string(40, 'x'), line);
  }
  BOOST_TEST(start == got.size());  // nothing after the last newline
  BOOST_TEST(lines == size_t{kThreads * kLines});
}

BOOST_AUTO_TEST_CASE(a_line_that_cannot_be_written_is_dropped_whole) {
  // A full pipe that does not block: the line goes nowhere, not half of it, and the call returns.
  Pipe full;
  BOOST_TEST_REQUIRE(::fcntl(full.write_end, F_SETFL, O_NONBLOCK) == 0);
  const std::string filler(512, 'f');
  size_t filled = 0;
  for (ssize_t n; (n = ::write(full.write_end, filler.data(), filler.size())) > 0;) filled += n;
  BOOST_TEST_REQUIRE(errno == EAGAIN);
  spdlog::logger log("full", MakeLineSink(full.write_end));
  log.error("no room for this line");
  const std::string got = full.ReadAll();
  BOOST_TEST(got.size() == filled);
  BOOST_TEST(got.find("no room") == std::string::npos);

  // No reader (EPIPE; the daemon ignores SIGPIPE, cmd/daemon.cc, and so does this test) and no
  // file (EBADF): dropped too, and the next line on a good descriptor is written.
  auto old = std::signal(SIGPIPE, SIG_IGN);
  Pipe gone;
  ::close(gone.read_end);
  gone.read_end = -1;
  spdlog::logger("gone", MakeLineSink(gone.write_end)).error("nobody reads this");
  spdlog::logger("bad", MakeLineSink(-1)).error("nowhere");
  std::signal(SIGPIPE, old);
  Pipe good;
  spdlog::logger("good", MakeLineSink(good.write_end)).warn("after");
  const std::string line = good.ReadAll();
  BOOST_TEST(line.substr(23) == " warning good: after\n");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid::cmd
