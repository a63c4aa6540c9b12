// machine_costs: what the machine a benchmark runs on charges for the things the agent's latency
// figures are made of, printed as one JSON line for the bench scripts (bench/machine.py):
//   syscall_us      one system call (getppid), the median of 20 batches of 20,000
//   handoff_p50_us  one round trip between two threads through two pipes (write, the other thread
//   handoff_p99_us  wakes, reads and writes back): what a request handed to another thread costs
//   cpu_loop_ms     a fixed integer loop: the CPU's speed at this moment, for comparing runs
// A current x86 server on bare metal answers a system call in about 0.1-0.3 us; a figure far above
// that says the budgets are being measured on a machine where every kernel entry costs more (a
// guest whose kernel entries go through the hypervisor), and the figures are to be read with it.
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1))];
}

double SyscallUs() {
  std::vector<double> batches;
  for (int b = 0; b < 20; ++b) {
    constexpr int kCalls = 20000;
    const auto t0 = Clock::now();
    for (int i = 0; i < kCalls; ++i) ::syscall(SYS_getppid);
    batches.push_back(Us(Clock::now() - t0) / kCalls);
  }
  return Percentile(batches, 50);
}

// Round trips through two pipes, 2,000 of them, each after a short pause so that the other
// thread is asleep when the byte arrives, as a request handed to a waiting thread finds it.
bool HandoffUs(double* p50, double* p99) {
  int to[2], back[2];
  if (::pipe(to) != 0 || ::pipe(back) != 0) return false;
  std::thread echo([&] {
    char c;
    while (::read(to[0], &c, 1) == 1 && c != 'q') {
      if (::write(back[1], &c, 1) != 1) break;
    }
  });
  std::vector<double> trips;
  bool ok = true;
  for (int i = 0; i < 2000 && ok; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    char c = 'x';
    const auto t0 = Clock::now();
    ok = ::write(to[1], &c, 1) == 1 && ::read(back[0], &c, 1) == 1;
    trips.push_back(Us(Clock::now() - t0));
  }
  char q = 'q';
  if (::write(to[1], &q, 1) != 1) ok = false;
  echo.join();
  for (int fd : {to[0], to[1], back[0], back[1]}) ::close(fd);
  *p50 = Percentile(trips, 50);
  *p99 = Percentile(trips, 99);
  return ok;
}

double CpuLoopMs() {
  volatile uint64_t sink = 0;
  const auto t0 = Clock::now();
  uint64_t s = 0;
  for (uint64_t i = 0; i < 20'000'000; ++i) s += i * i ^ (s >> 3);
  sink = s;
  (void)sink;
  return Us(Clock::now() - t0) / 1000.0;
}

}  // namespace

int main() {
  double p50 = 0, p99 = 0;
  if (!HandoffUs(&p50, &p99)) {
    std::perror("machine_costs: pipe round trip");
    return 1;
  }
  std::printf(
      "{\"syscall_us\": %.2f, \"handoff_p50_us\": %.1f, \"handoff_p99_us\": %.1f, "
      "\"cpu_loop_ms\": %.1f}\n",
      SyscallUs(), p50, p99, CpuLoopMs());
  return 0;
}
