// Ten simulated nodes racing on the KubeVirt object: each thread is one node's projection
// adding (then, for half of them, removing) its own pciHostDevices entry at the same moment,
// through projection/kubevirt.h over its own connection.
//
//   kubevirt_race KUBECONFIG NODES ROUND   (ROUND: "add" or "remove-even")
// Exit code 0 when every call succeeded; the caller checks the object with kubectl.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <barrier>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "projection/kube_client.h"
#include "projection/kubevirt.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: kubevirt_race KUBECONFIG NODES add|remove-even\n");
    return 2;
  }
  auto config = pcid::projection::LoadKubeconfig(argv[1]);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  const int nodes = std::stoi(argv[2]);
  const std::string round = argv[3];
  spdlog::logger log("race", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  std::barrier start(nodes);
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < nodes; ++i) {
    threads.emplace_back([&, i] {
      auto client = pcid::projection::KubeClient::Create(*config);
      char selector[16];
      std::snprintf(selector, sizeof selector, "1af4:%04x", 0x1000 + i);
      const pcid::projection::PciHostDevice mine{selector, "example.com/NODE_" + std::to_string(i)};
      std::vector<pcid::projection::PciHostDevice> add;
      std::set<std::string> remove;
      if (round == "remove-even" && i % 2 == 0) {
        remove.insert(mine.resource);
      } else {
        add.push_back(mine);
      }
      start.arrive_and_wait();  // all at once
      absl::Status st =
          client.ok() ? pcid::projection::UpdatePermittedHostDevices(**client, add, remove, 20, log)
                      : client.status();
      if (!st.ok()) {
        std::fprintf(stderr, "node %d: %s\n", i, std::string(st.message()).c_str());
        ++failed;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return failed == 0 ? 0 : 1;
}
