// Many simulated nodes' projections in one process against the API-server emulator
// (bench/run_projection.py drives it): each node publishes an inventory of DEVICES synthetic PCI
// functions and its projection mirrors them. Prints one JSON line when every node has converged
// (its creates and status patches done), with the process's RSS before and after, then waits for
// a line on stdin (the driver measures a quiet period meanwhile) and stops them all.
//
//   projection_bench KUBECONFIG FIRST_NODE NODES DEVICES
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "projection/projection.h"

namespace {

long RssKb() {
  std::ifstream in("/proc/self/status");
  std::string key;
  long value = 0;
  while (in >> key) {
    if (key == "VmRSS:") {
      in >> value;
      return value;
    }
    in.ignore(4096, '\n');
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: projection_bench KUBECONFIG FIRST_NODE NODES DEVICES\n");
    return 2;
  }
  auto config = pcid::projection::LoadKubeconfig(argv[1]);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  const int first = std::stoi(argv[2]), nodes = std::stoi(argv[3]), devices = std::stoi(argv[4]);
  auto log =
      std::make_shared<spdlog::logger>("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
  const long rss_before = RssKb();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<pcid::projection::Projection>> running;
  for (int n = first; n < first + nodes; ++n) {
    auto p = pcid::projection::Projection::Start(
        *config, "node-" + std::to_string(n), log,
        [](pcid::projection::ClaimRequest,
           std::function<void(pcid::projection::ClaimOutcome)> done) {
          done({true, "", "", ""});
        });
    if (!p.ok()) {
      std::fprintf(stderr, "%s\n", std::string(p.status().message()).c_str());
      return 1;
    }
    auto inv = std::make_shared<pcid::projection::Inventory>();
    for (int d = 0; d < devices; ++d) {
      pcid::PciDevice dev;
      dev.address = {0, static_cast<uint8_t>(1 + d / 8), 0, static_cast<uint8_t>(d % 8)};
      dev.vendor_id = 0x8086;
      dev.device_id = 0x1533;
      dev.class_code = 0x02;
      dev.driver = "igb";
      dev.iommu_group = static_cast<unsigned>(d);
      inv->pci.push_back(dev);
    }
    (*p)->Publish(std::move(inv));
    running.push_back(*std::move(p));
  }
  // Converged: every object created and its status written.
  for (;;) {
    int done = 0;
    uint64_t failures = 0;
    for (const auto& p : running) {
      const auto s = p->stats();
      failures += s.failures;
      if (s.creates >= static_cast<uint64_t>(devices) &&
          s.status_patches + s.creates >= static_cast<uint64_t>(devices)) {
        ++done;
      }
    }
    if (done == nodes) break;
    if (std::chrono::steady_clock::now() - t0 > std::chrono::minutes(10)) {
      std::fprintf(stderr, "not converged after 10 min: %d of %d nodes (%lu failed writes)\n", done,
                   nodes, static_cast<unsigned long>(failures));
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t creates = 0, failures = 0;
  for (const auto& p : running) {
    creates += p->stats().creates;
    failures += p->stats().failures;
  }
  std::printf(
      "{\"nodes\": %d, \"seconds\": %.2f, \"creates\": %lu, \"failures\": %lu, "
      "\"rss_before_kb\": %ld, \"rss_after_kb\": %ld}\n",
      nodes, seconds, static_cast<unsigned long>(creates), static_cast<unsigned long>(failures),
      rss_before, RssKb());
  std::fflush(stdout);
  std::string line;
  std::getline(std::cin, line);  // the driver's quiet period ends
  running.clear();
  return 0;
}
