// The projection's SR-IOV side against a real API peer, without the agent: Projection::Start with
// a device owner faked here, for one node whose inventory has an SR-IOV NIC (0000:3b:00.0,
// interface enp59s0f0, 8 VFs at most) and an SR-IOV GPU (0000:81:00.0, 4 VFs). The owner answers
// at once as the agent would: VF counts become the NIC's (or GPU's) VFs and a new inventory is
// published; VFClaims get free VFs of the NIC (made when it has none, up to max_vfs). Every
// request is printed as one JSON line on stdout; sriov_projection_test.py checks them.
//
//   sriov_projection KUBECONFIG NODE     runs until stdin closes
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <string>

#include "core/json_writer.h"
#include "projection/projection.h"

namespace {

using pcid::PciAddress;
using pcid::PciDevice;
using namespace pcid::projection;

constexpr unsigned kNicTotal = 8;
constexpr unsigned kGpuTotal = 4;

// The fake owner's node: how many VFs each PF has, which VFs each claim holds.
struct Node {
  std::mutex mu;
  unsigned nic_vfs = 0, gpu_vfs = 0;
  std::map<std::string, std::vector<std::string>> claims;
  Projection* projection = nullptr;

  static std::vector<PciAddress> Vfs(PciAddress pf, unsigned first_device, unsigned n) {
    std::vector<PciAddress> out;
    for (unsigned i = 0; i < n; ++i) {
      out.push_back({pf.domain, pf.bus, static_cast<uint8_t>(first_device + i / 8),
                     static_cast<uint8_t>(i % 8)});
    }
    return out;
  }
  static std::vector<std::string> Text(const std::vector<PciAddress>& list) {
    std::vector<std::string> out;
    for (const PciAddress& a : list) out.push_back(a.ToString());
    return out;
  }
  std::shared_ptr<const Inventory> Snapshot() const {
    auto inv = std::make_shared<pcid::projection::Inventory>();
    PciDevice nic;
    nic.address = {0, 0x3b, 0, 0};
    nic.vendor_id = 0x8086;
    nic.device_id = 0x1583;
    nic.class_code = 0x02;
    nic.driver = "i40e";
    nic.iommu_group = 20;
    nic.sriov_total_vfs = kNicTotal;
    nic.sriov_num_vfs = nic_vfs;
    nic.net_interfaces = {"enp59s0f0"};
    nic.virtual_functions = Vfs(nic.address, 2, nic_vfs);
    PciDevice gpu;
    gpu.address = {0, 0x81, 0, 0};
    gpu.vendor_id = 0x10de;
    gpu.device_id = 0x2236;
    gpu.class_code = 0x03;
    gpu.driver = "nvidia";
    gpu.iommu_group = 30;
    gpu.sriov_total_vfs = kGpuTotal;
    gpu.sriov_num_vfs = gpu_vfs;
    gpu.virtual_functions = Vfs(gpu.address, 0, gpu_vfs);
    // VF functions themselves are left out: the PCIDevice mirror is not what this test checks.
    inv->pci = {nic, gpu};
    return inv;
  }
};

void Print(const pcid::JsonWriter& w) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::cout << w.str() << std::endl;
}

VfOutcome Count(Node& node, const VfCountRequest& r) {
  pcid::JsonWriter w;
  w.BeginObject().Key("kind").String("count").Key("source").String(r.source);
  w.Key("pf").String(r.pf_address);
  if (r.count) {
    w.Key("count").Int(*r.count);
  } else {
    w.Key("count").Null();
  }
  w.EndObject();
  Print(w);
  const bool nic = r.pf_address == "0000:3b:00.0";
  if (!nic && r.pf_address != "0000:81:00.0")
    return {false, "DeviceNotFound", r.pf_address, {}, ""};
  const unsigned total = nic ? kNicTotal : kGpuTotal;
  if (r.count && *r.count > total) {
    return {false, "TooManyVFs", "the PF has " + std::to_string(total) + " VFs at most", {}, ""};
  }
  (nic ? node.nic_vfs : node.gpu_vfs) = r.count.value_or(0);  // a give-back: it had none
  const unsigned n = nic ? node.nic_vfs : node.gpu_vfs;
  return {true, "", "",
          Node::Text(Node::Vfs(nic ? PciAddress{0, 0x3b, 0, 0} : PciAddress{0, 0x81, 0, 0},
                               nic ? 2 : 0, n)),
          ""};
}

VfOutcome Claim(Node& node, const VfClaimRequest& r) {
  pcid::JsonWriter w;
  w.BeginObject().Key("kind").String("claim").Key("name").String(r.name);
  w.Key("release").Bool(r.release).Key("pf").String(r.pf_address);
  w.Key("vendor").String(r.vendor_id).Key("device").String(r.device_id).Key("count").Int(r.count);
  w.Key("maxVFs").BeginObject();
  for (const auto& [pf, n] : r.max_vfs) w.Key(pf).Int(n);
  w.EndObject().EndObject();
  Print(w);
  if (r.release) {
    node.claims.erase(r.name);
    return {true, "", "", {}, ""};
  }
  if (auto held = node.claims.find(r.name); held != node.claims.end()) {
    return {true, "", "", held->second, "intel.com/XL710_VF"};
  }
  if (node.nic_vfs == 0) {
    auto max = r.max_vfs.find("0000:3b:00.0");
    node.nic_vfs = max == r.max_vfs.end() ? kNicTotal : max->second;
  }
  std::vector<std::string> free;
  for (const std::string& vf : Node::Text(Node::Vfs({0, 0x3b, 0, 0}, 2, node.nic_vfs))) {
    bool taken = false;
    for (const auto& [name, vfs] : node.claims) {
      taken |= std::find(vfs.begin(), vfs.end(), vf) != vfs.end();
    }
    if (!taken) free.push_back(vf);
  }
  if (free.size() < r.count) {
    return {false, "NotEnoughVFs", std::to_string(free.size()) + " free VFs", {}, ""};
  }
  free.resize(r.count);
  node.claims[r.name] = free;
  return {true, "", "", free, "intel.com/XL710_VF"};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: sriov_projection KUBECONFIG NODE\n");
    return 2;
  }
  // As the daemon: a TLS peer gone away (the connections cut at shutdown) is an error return,
  // not a process-killing SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  auto config = LoadKubeconfig(argv[1]);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  auto log = std::make_shared<spdlog::logger>("projection",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
  auto node = std::make_shared<Node>();
  SriovHandler sriov = [node](VfRequest request, std::function<void(VfOutcome)> done) {
    VfOutcome outcome;
    std::shared_ptr<const Inventory> inventory;
    Projection* projection = nullptr;
    {
      std::lock_guard<std::mutex> lock(node->mu);
      outcome = std::visit(
          [&](const auto& r) {
            using Request = std::decay_t<decltype(r)>;
            if constexpr (std::is_same_v<Request, VfCountRequest>) {
              return Count(*node, r);
            } else if constexpr (std::is_same_v<Request, VfClaimSweep>) {
              return VfOutcome{true, "", "", {}, ""};  // nothing held before this harness
            } else {
              return Claim(*node, r);
            }
          },
          request);
      inventory = node->Snapshot();
      projection = node->projection;
    }
    // As the agent: the answer, then the inventory its re-read publishes.
    done(std::move(outcome));
    projection->Publish(std::move(inventory));
  };
  ClaimHandler claims = [](ClaimRequest, std::function<void(ClaimOutcome)> done) {
    done(ClaimOutcome{false, "", "Refused", "not served by this test"});
  };
  auto projection = Projection::Start(*config, argv[2], log, claims, sriov);
  if (!projection.ok()) {
    std::fprintf(stderr, "%s\n", std::string(projection.status().message()).c_str());
    return 1;
  }
  std::shared_ptr<const Inventory> first;
  {
    std::lock_guard<std::mutex> lock(node->mu);
    node->projection = projection->get();
    first = node->Snapshot();
  }
  (*projection)->Publish(first);
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  return 0;
}
