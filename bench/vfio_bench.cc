// Enable + disable round trips through vfio/ on a real kernel (run inside the VM by
// bench/run_vfio.py): per round, all the given functions enabled in one go (EnableAll: one state
// save, then each bound and verified), then each disabled. Prints one line per round and the
// medians, in milliseconds. With `bare`, only the kernel writes DESIGN.md names (driver_override,
// driver/unbind, drivers_probe), nothing read, saved or verified: the floor ours is measured
// against.
//
//   vfio_bench SYSFS_ROOT DEV_ROOT PROC_ROOT STATE_DIR ROUNDS ADDRESS[,ADDRESS...] [bare]
//
// It rebinds real devices: the roots are explicit (the guest's /sys, /dev, /proc), never a
// default, so that running it on a host by mistake cannot reach that host's own devices.
#include <absl/strings/str_split.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "udev/discovery.h"
#include "vfio/vfio.h"

namespace {

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7 && !(argc == 8 && std::string(argv[7]) == "bare")) {
    std::fprintf(stderr,
                 "usage: vfio_bench SYSFS_ROOT DEV_ROOT PROC_ROOT STATE_DIR ROUNDS "
                 "ADDRESS[,ADDRESS...] [bare]\n");
    return 2;
  }
  spdlog::logger log("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
  auto sysfs = pcid::SysfsRoot::Open(argv[1]);
  auto dev = pcid::SysfsRoot::Open(argv[2]);
  auto proc = pcid::SysfsRoot::Open(argv[3]);
  auto store = pcid::vfio::StateStore::Open(argv[4]);
  if (!sysfs.ok() || !dev.ok() || !proc.ok() || !store.ok()) {
    std::fprintf(stderr, "vfio_bench: cannot open /sys, /dev, /proc or the state dir\n");
    return 1;
  }
  const int rounds = std::stoi(argv[5]);
  const std::vector<std::string> wanted = absl::StrSplit(argv[6], ',');
  pcid::vfio::Node node{
      *sysfs,
      *dev,
      [] { return absl::OkStatus(); },
      [&](std::string_view rel, std::string_view v) { return sysfs->WriteFile(rel, v); },
      nullptr,
      log};
  std::vector<double> enable_ms, disable_ms;
  for (int r = 0; r < rounds; ++r) {
    auto devices = pcid::udev::DiscoverPciDevices(*sysfs, nullptr, log);
    auto protect = pcid::vfio::FindProtectedDevices(*sysfs, *proc, *devices, {});
    if (!devices.ok() || !protect.ok()) return 1;
    std::vector<const pcid::PciDevice*> chosen;
    for (const auto& d : *devices) {
      if (std::find(wanted.begin(), wanted.end(), d.address.ToString()) != wanted.end()) {
        chosen.push_back(&d);
      }
    }
    if (chosen.size() != wanted.size()) {
      std::fprintf(stderr, "vfio_bench: not every address is on this node\n");
      return 1;
    }
    if (argc == 8) {
      auto write = [&](const std::string& rel, const std::string& v) {
        if (absl::Status st = sysfs->WriteFile(rel, v); !st.ok()) {
          std::fprintf(stderr, "vfio_bench: %s\n", std::string(st.message()).c_str());
          std::exit(1);
        }
      };
      auto cycle = [&](const char* override) {
        for (const pcid::PciDevice* d : chosen) {
          const std::string a = d->address.ToString(), dir = "bus/pci/devices/" + a;
          write(dir + "/driver_override", override);
          write(dir + "/driver/unbind", a);
          write("bus/pci/drivers_probe", a);
        }
      };
      const auto t0 = std::chrono::steady_clock::now();
      cycle("vfio-pci");
      const auto t1 = std::chrono::steady_clock::now();
      cycle("\n");
      const auto t2 = std::chrono::steady_clock::now();
      enable_ms.push_back(Ms(t1 - t0));
      disable_ms.push_back(Ms(t2 - t1));
      std::printf("round %d: enable %.1f ms, disable %.1f ms (%zu functions, bare writes)\n", r,
                  Ms(t1 - t0), Ms(t2 - t1), chosen.size());
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (const absl::Status& st : pcid::vfio::EnableAll(node, *store, chosen, *protect, "cli")) {
      if (!st.ok()) {
        std::fprintf(stderr, "vfio_bench: %s\n", std::string(st.message()).c_str());
        return 1;
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    for (const pcid::PciDevice* d : chosen) {
      if (absl::Status st = pcid::vfio::Disable(node, *store, d->address, "cli"); !st.ok()) {
        std::fprintf(stderr, "vfio_bench: %s\n", std::string(st.message()).c_str());
        return 1;
      }
    }
    const auto t2 = std::chrono::steady_clock::now();
    enable_ms.push_back(Ms(t1 - t0));
    disable_ms.push_back(Ms(t2 - t1));
    std::printf("round %d: enable %.1f ms, disable %.1f ms (%zu functions)\n", r, Ms(t1 - t0),
                Ms(t2 - t1), chosen.size());
  }
  std::printf("median: enable %.1f ms, disable %.1f ms, round trip %.1f ms\n", Median(enable_ms),
              Median(disable_ms), Median(enable_ms) + Median(disable_ms));
  return 0;
}
