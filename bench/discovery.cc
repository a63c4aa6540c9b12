// bench/discovery: full PCI discovery (names included) and the pci.ids load, timed on a sysfs
// tree, next to `lspci -Dnnk` on the same tree. Prints figures; budgets are in issue 2:
// scan <= 20 ms median, pci.ids load <= 5 ms, faster than lspci.
//
// usage: discovery SYSFS_ROOT [ITERATIONS]   (bench/run_discovery.sh builds the 2,048-VF tree)
#include "udev/discovery.h"

#include <fcntl.h>
#include <spawn.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/id_database.h"
#include "core/sysfs_root.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Stats {
  double median, p90, min;
};

Stats Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[v.size() * 9 / 10], v.front()};
}

// One run of lspci -Dnnk on the tree, output to /dev/null; milliseconds, or -1 on failure.
double TimeLspci(const std::string& root) {
  const std::string opt = "sysfs.path=" + root + "/bus/pci";
  const char* argv[] = {"lspci", "-A", "linux-sysfs", "-O", opt.c_str(), "-Dnnk", nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  const auto start = Clock::now();
  const int rc = posix_spawnp(&pid, "lspci", &fa, nullptr, const_cast<char**>(argv), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  const double ms = Ms(Clock::now() - start);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? ms : -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s SYSFS_ROOT [ITERATIONS]\n", argv[0]);
    return 2;
  }
  const std::string root = argv[1];
  const int iterations = argc > 2 ? std::atoi(argv[2]) : 50;
  spdlog::logger log("bench", std::make_shared<spdlog::sinks::null_sink_st>());

  std::vector<double> load_ms;
  for (int i = 0; i < iterations; ++i) {
    const auto start = Clock::now();
    auto db = pcid::IdDatabase::LoadFirst(pcid::DefaultPciIdsPaths());
    load_ms.push_back(Ms(Clock::now() - start));
    if (!db.ok()) {
      std::fprintf(stderr, "pci.ids: %s\n", std::string(db.status().message()).c_str());
      return 1;
    }
  }
  const pcid::IdDatabase ids = *pcid::IdDatabase::LoadFirst(pcid::DefaultPciIdsPaths());

  auto sysfs = pcid::SysfsRoot::Open(root);
  if (!sysfs.ok()) {
    std::fprintf(stderr, "%s\n", std::string(sysfs.status().message()).c_str());
    return 1;
  }
  size_t functions = 0;
  std::vector<double> scan_ms;
  for (int i = 0; i < iterations; ++i) {
    const auto start = Clock::now();
    auto devices = pcid::udev::DiscoverPciDevices(*sysfs, &ids, log);
    scan_ms.push_back(Ms(Clock::now() - start));
    if (!devices.ok()) return 1;
    functions = devices->size();
  }

  std::vector<double> lspci_ms;
  for (int i = 0; i < std::max(5, iterations / 5); ++i) {
    const double ms = TimeLspci(root);
    if (ms < 0) {
      std::fprintf(stderr, "lspci failed on %s\n", root.c_str());
      return 1;
    }
    lspci_ms.push_back(ms);
  }

  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const Stats load = Summarize(load_ms), scan = Summarize(scan_ms), lspci = Summarize(lspci_ms);
  std::printf("tree: %s, %zu PCI functions, %d iterations\n", root.c_str(), functions, iterations);
  std::printf("pci.ids load      : median %7.2f ms  p90 %7.2f ms  min %7.2f ms  (budget 5 ms)\n",
              load.median, load.p90, load.min);
  std::printf("full scan + names : median %7.2f ms  p90 %7.2f ms  min %7.2f ms  (budget 20 ms)\n",
              scan.median, scan.p90, scan.min);
  std::printf("lspci -Dnnk       : median %7.2f ms  p90 %7.2f ms  min %7.2f ms\n", lspci.median,
              lspci.p90, lspci.min);
  std::printf("load + scan vs lspci: %.1fx faster (median)\n",
              lspci.median / (load.median + scan.median));
  std::printf("max RSS of this benchmark: %ld KiB\n", ru.ru_maxrss);
  const bool ok = load.median <= 5 && scan.median <= 20 && load.median + scan.median < lspci.median;
  std::printf("budgets: %s\n", ok ? "met" : "MISSED");
  return ok ? 0 : 1;
}
