#include "plugin/resource_planner.h"

#include <absl/strings/str_format.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <random>

#include "core/naming.h"

namespace pcid::plugin {
namespace {

const char* const kModels[] = {"GP106 [GeForce GTX 1060 3GB]", "TU104GL [Tesla T4]",
                               "Ethernet Controller X710"};
const char* const kDrivers[] = {"vfio-pci", "vfio-pci", "vfio-pci", "nvidia", ""};

PciDevice Function(unsigned bus, unsigned fn, unsigned group, const std::string& driver,
                   int model) {
  PciDevice d;
  d.address = *ParsePciAddress(absl::StrFormat("0000:%02x:00.%u", bus, fn));
  d.vendor_id = 0x10de;
  d.device_id = static_cast<uint16_t>(0x1000 + model);
  d.class_code = 0x03;
  d.names.Mutable().vendor = "NVIDIA Corporation";
  d.names.Mutable().device = kModels[model];
  d.iommu_group = group;
  d.driver = driver;
  return d;
}

// A node's inputs, changed a little at a time; the planner is told which functions it changed,
// as the reconciler tells it.
struct Node {
  std::vector<PciDevice> pci;
  std::vector<UsbDevice> usb;
  std::set<std::string> enabled_pci, enabled_usb;
  HealthInputs inputs;

  void Sort() {
    std::sort(pci.begin(), pci.end(),
              [](const PciDevice& a, const PciDevice& b) { return a.address < b.address; });
  }
};

// The names whose resource differs between two plans.
std::set<std::string> Differing(const std::map<std::string, Resource>& a,
                                const std::map<std::string, Resource>& b) {
  std::set<std::string> out;
  for (const auto& [name, r] : a) {
    if (auto it = b.find(name); it == b.end() || it->second != r) out.insert(name);
  }
  for (const auto& [name, r] : b) {
    if (!a.count(name)) out.insert(name);
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(resource_planner)

// After every one of many random changes, the planner's plan is the whole-node plan for the same
// inputs, and it names exactly the resources that changed.
BOOST_AUTO_TEST_CASE(small_steps_give_the_whole_node_plan) {
  std::mt19937 rng(20261205);
  auto pick = [&rng](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  Node node;
  // 24 functions: groups of one, two and three functions, on three models.
  for (unsigned bus = 1; bus <= 12; ++bus) {
    for (unsigned fn = 0; fn < (bus % 3 == 0 ? 3u : bus % 3 == 1 ? 1u : 2u); ++fn) {
      node.pci.push_back(Function(bus, fn, 100 + bus, "vfio-pci", static_cast<int>(bus % 3)));
      node.enabled_pci.insert(node.pci.back().address.ToString());
      node.inputs.vfio_group_nodes.insert(100 + bus);
    }
  }
  node.Sort();
  UsbDevice stick;
  stick.bus = 1;
  stick.devnum = 4;
  stick.vendor_id = 0x0951;
  stick.product_id = 0x1666;
  node.usb.push_back(stick);

  ResourcePlanner planner;
  // A second planner takes a small slice a step and is drained now and then, so that changes
  // land in the middle of its sliced plans.
  ResourcePlanner sliced;
  auto mark = [&](const PciAddress& a) {
    planner.MarkChanged(a);
    sliced.MarkChanged(a);
  };
  // The node-sized inputs (enabled set, group nodes, cdevs): marked precisely, as the
  // reconciler does after a uevent or a job, or one step in five left to the planner's
  // comparison, as after a probe of the whole node.
  auto mark_input = [&](auto precise) {
    if (pick(5) == 0) {
      planner.MarkInputsChanged();
      sliced.MarkInputsChanged();
    } else {
      precise();
    }
  };
  auto last =
      PlanResources(node.pci, node.usb, node.enabled_pci, node.enabled_usb, "n", node.inputs);
  BOOST_TEST(planner.Plan(node.pci, node.usb, node.enabled_pci, node.enabled_usb, "n",
                          node.inputs) == Differing({}, last));
  BOOST_REQUIRE(planner.resources() == last);

  int moves = 0, changes = 0;
  for (int step = 0; step < 3000; ++step) {
    const size_t i = pick(node.pci.size());
    PciDevice& d = node.pci[i];
    const std::string id = d.address.ToString();
    switch (pick(10)) {
      case 0:  // a bind or unbind
        d.driver = kDrivers[pick(std::size(kDrivers))];
        mark(d.address);
        break;
      case 1:  // enabled or given back
        if (!node.enabled_pci.erase(id)) node.enabled_pci.insert(id);
        mark_input([&] { mark(d.address); });
        break;
      case 2:  // allocated, released, or held by another container
        if (pick(3) == 0) {
          node.inputs.allocated_to.erase(id);
        } else {
          node.inputs.allocated_to[id] = pick(2) ? "pod-a/c" : "pod-b/c";
        }
        break;
      case 3:  // /dev/vfio/<group> comes or goes
        if (d.iommu_group && !node.inputs.vfio_group_nodes.erase(*d.iommu_group)) {
          node.inputs.vfio_group_nodes.insert(*d.iommu_group);
        }
        if (d.iommu_group) {
          mark_input([&] {
            planner.MarkGroupChanged(*d.iommu_group);
            sliced.MarkGroupChanged(*d.iommu_group);
          });
        }
        break;
      case 4:  // unplugged while allocated, or back
        if (!node.inputs.removed.erase(id)) node.inputs.removed.insert(id);
        break;
      case 5:  // an iommufd cdev appears or goes
        if (!node.inputs.vfio_cdevs.erase(id)) node.inputs.vfio_cdevs[id] = unsigned(pick(9));
        mark_input([&] { mark(d.address); });
        break;
      case 6: {  // another model at the same address (a new card): another resource
        const int model = static_cast<int>(pick(std::size(kModels)));
        d.names.Mutable().device = kModels[model];
        d.device_id = static_cast<uint16_t>(0x1000 + model);
        mark(d.address);
        break;
      }
      case 7: {  // unplugged, or a function plugged in (into an existing or a new group)
        if (pick(2) == 0 && node.pci.size() > 4) {
          mark(d.address);
          node.pci.erase(node.pci.begin() + static_cast<long>(i));
        } else {
          PciDevice added =
              Function(0x40 + static_cast<unsigned>(pick(8)), static_cast<unsigned>(pick(4)),
                       100 + unsigned(pick(16)), kDrivers[pick(std::size(kDrivers))],
                       static_cast<int>(pick(std::size(kModels))));
          if (FindPciDevice(node.pci, added.address)) break;
          mark(added.address);
          node.pci.push_back(added);
          node.Sort();
        }
        break;
      }
      case 8:  // moved to another IOMMU group (an ACS setting changed)
        d.iommu_group = 100 + static_cast<unsigned>(pick(16));
        mark(d.address);
        break;
      case 9:  // the USB stick enabled or given back
        if (!node.enabled_usb.erase("n-0951-1666-001004")) {
          node.enabled_usb.insert("n-0951-1666-001004");
        }
        break;
    }
    const auto want =
        PlanResources(node.pci, node.usb, node.enabled_pci, node.enabled_usb, "n", node.inputs);
    const auto changed =
        planner.Plan(node.pci, node.usb, node.enabled_pci, node.enabled_usb, "n", node.inputs);
    BOOST_REQUIRE_MESSAGE(planner.resources() == want, "step " << step);
    BOOST_REQUIRE_MESSAGE(changed == Differing(last, want), "step " << step);
    sliced.Plan(node.pci, node.usb, node.enabled_pci, node.enabled_usb, "n", node.inputs,
                1 + pick(4));
    if (step % 50 == 49) {
      for (int calls = 0; sliced.pending(); ++calls) {
        BOOST_REQUIRE(calls < 1000);
        sliced.Plan(node.pci, node.usb, node.enabled_pci, node.enabled_usb, "n", node.inputs,
                    1 + pick(4));
      }
      BOOST_REQUIRE_MESSAGE(sliced.resources() == want, "sliced, step " << step);
    }
    if (!changed.empty()) ++changes;
    if (changed.size() > 1) ++moves;
    last = want;
  }
  // The walk reached both kinds of step: a change in one resource, and a move between two.
  BOOST_TEST(changes > 1000);
  BOOST_TEST(moves > 50);
}

// A function planned once and not marked again keeps its plan even if its PciDevice changed: the
// planner trusts the caller's marks for PciDevices (which is what makes a step cheap).
BOOST_AUTO_TEST_CASE(only_marked_functions_are_read_again) {
  std::vector<PciDevice> pci = {Function(1, 0, 1, "vfio-pci", 0), Function(2, 0, 2, "vfio-pci", 0)};
  const std::set<std::string> enabled = {"0000:01:00.0", "0000:02:00.0"};
  HealthInputs in;
  in.vfio_group_nodes = {1, 2};
  ResourcePlanner planner;
  planner.Plan(pci, {}, enabled, {}, "n", in);
  const std::string name = PciResourceName(pci[0]);
  pci[0].driver = "nvidia";
  pci[1].driver = "nvidia";
  planner.MarkChanged(pci[1].address);
  BOOST_TEST(planner.Plan(pci, {}, enabled, {}, "n", in) == std::set<std::string>{name});
  const Resource& r = planner.resources().at(name);
  BOOST_TEST(r.devices[0].healthy);
  BOOST_TEST(!r.devices[1].healthy);
  BOOST_TEST(r.devices[1].health_reason == "bound to nvidia, want vfio-pci");
  // Nothing changed: nothing planned, nothing named.
  BOOST_TEST(planner.Plan(pci, {}, enabled, {}, "n", in).empty());
  // MarkAll reads every function again.
  planner.MarkAll();
  BOOST_TEST(planner.Plan(pci, {}, enabled, {}, "n", in) == std::set<std::string>{name});
  BOOST_TEST(!planner.resources().at(name).devices[0].healthy);
}

// Mdev resources are replaced whole, leave PCI resources alone, and are left alone by PCI plans.
BOOST_AUTO_TEST_CASE(mdev_resources_beside_pci_ones) {
  std::vector<PciDevice> pci = {Function(1, 0, 1, "vfio-pci", 0)};
  const std::set<std::string> enabled = {"0000:01:00.0"};
  HealthInputs in;
  in.vfio_group_nodes = {1};
  ResourcePlanner planner;
  planner.Plan(pci, {}, enabled, {}, "n", in);
  const std::string small = "pcidevices.io/mbochs-small";
  std::vector<ServedMdev> served = {{.uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001",
                                     .resource = small,
                                     .iommu_group = 11,
                                     .present = true,
                                     .group_node = true,
                                     .numa_node = -1}};
  BOOST_TEST(planner.PlanMdevs(PlanMdevResources(served)) == std::set<std::string>{small});
  BOOST_TEST(planner.PlanMdevs(PlanMdevResources(served)).empty());
  planner.MarkAll();
  BOOST_TEST(planner.Plan(pci, {}, enabled, {}, "n", in).empty());
  BOOST_TEST(planner.resources().count(small) == 1u);
  served[0].group_node = false;
  BOOST_TEST(planner.PlanMdevs(PlanMdevResources(served)) == std::set<std::string>{small});
  BOOST_TEST(!planner.resources().at(small).devices[0].healthy);
  BOOST_TEST(planner.PlanMdevs({}) == std::set<std::string>{small});
  BOOST_TEST(planner.resources().size() == 1u);  // the PCI resource stays
  // A name a PCI resource has stays the PCI resource's.
  const std::string pci_name = PciResourceName(pci[0]);
  served[0].resource = pci_name;
  BOOST_TEST(planner.PlanMdevs(PlanMdevResources(served)).empty());
  BOOST_TEST(!planner.resources().at(pci_name).mdev);
}

// Thousands of functions changing at once are planned over several calls, a few at a time; the
// plan they end with is the whole-node plan.
BOOST_AUTO_TEST_CASE(a_big_change_is_planned_in_steps) {
  std::vector<PciDevice> pci;
  std::set<std::string> enabled;
  HealthInputs in;
  for (unsigned bus = 1; bus <= 8; ++bus) {
    for (unsigned fn = 0; fn < 3; ++fn) {
      pci.push_back(Function(bus, fn, bus, fn == 2 ? "nvidia" : "vfio-pci", int(fn)));
      enabled.insert(pci.back().address.ToString());
    }
    in.vfio_group_nodes.insert(bus);
  }
  const auto want = PlanResources(pci, {}, enabled, {}, "n", in);
  ResourcePlanner planner;
  std::set<std::string> named;
  int calls = 0;
  do {
    const auto changed = planner.Plan(pci, {}, enabled, {}, "n", in, /*max_functions=*/5);
    named.insert(changed.begin(), changed.end());
    ++calls;
    BOOST_REQUIRE(calls < 100);
    if (planner.pending()) BOOST_TEST((planner.resources() != want));
  } while (planner.pending());
  // 24 functions in groups of 3: 5 taken a call, each with its group (6 functions), 4 calls.
  BOOST_TEST(calls >= 4);
  BOOST_TEST(calls <= 10);
  BOOST_TEST((planner.resources() == want));
  BOOST_TEST(named == Differing({}, want));
  // A group whose members are planned in different calls ends up consistent: the viability of
  // group 3 (its third function on nvidia) is in every member's health.
  BOOST_TEST(!FindDevice(planner.resources().at(PciResourceName(pci[6])), "0000:03:00.0")->healthy);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid::plugin
