// The DRA pool's ResourceSlices: names, attributes within the API server's limits, splitting,
// and the controller's writes (none while quiet, a new generation on every change with the changed
// slice first, written again after the kubelet wiped them).
#include "projection/resource_slices.h"

#include <absl/strings/str_format.h>
#include <simdjson.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>

#include "core/clock.h"
#include "projection/controllers.h"
#include "projection/kube_client.h"
#include "projection/messages.h"
#include "unit/projection/fake_server.h"

namespace pcid::projection {
namespace {

PciDevice Dev(const std::string& address, std::optional<std::string> bridge = std::nullopt) {
  PciDevice d;
  d.address = *ParsePciAddress(address);
  d.vendor_id = 0x10de;
  d.device_id = 0x1c03;
  d.class_code = 0x03;
  d.iommu_group = 7;
  d.driver = "nouveau";
  if (bridge) d.parent_bridge = *ParsePciAddress(*bridge);
  return d;
}

BOOST_AUTO_TEST_CASE(names_are_dns_labels_from_what_does_not_change) {
  BOOST_TEST(DraPciDeviceName(*ParsePciAddress("0000:81:00.1")) == "pci-0000-81-00-1");
  UsbDevice u;
  u.port = "0000:00:14.0-usb3-1.2";
  BOOST_TEST(DraUsbDeviceName(u) == "usb-0000-00-14-0-usb3-1-2");
}

BOOST_AUTO_TEST_CASE(pcie_root_is_the_topmost_bridge_bus) {
  std::vector<PciDevice> devs = {Dev("0000:3a:00.0"), Dev("0000:3b:00.0", "0000:3a:00.0"),
                                 Dev("0000:3c:00.0", "0000:3b:00.0")};
  devs[0].class_code = 0x06;
  devs[0].subclass = 0x04;
  BOOST_TEST(PcieRoot(devs, devs[2]) == "pci0000:3a");
  BOOST_TEST(PcieRoot(devs, devs[0]) == "pci0000:3a");
  // A bridge not among the functions read: as high as can be seen.
  std::vector<PciDevice> alone = {Dev("0001:05:00.0", "0001:04:01.0")};
  BOOST_TEST(PcieRoot(alone, alone[0]) == "pci0001:04");
}

BOOST_AUTO_TEST_CASE(pool_splits_at_128_with_attributes_within_limits) {
  std::vector<PciDevice> devs;
  std::set<PciAddress> dra;
  for (int i = 0; i < 300; ++i) {
    devs.push_back(Dev(absl::StrFormat("0000:%02x:%02x.0", 0x10 + i / 32, i % 32)));
    if (i % 3 == 0) devs.back().numa_node = 1;
    dra.insert(devs.back().address);
  }
  std::sort(devs.begin(), devs.end(),
            [](const PciDevice& a, const PciDevice& b) { return a.address < b.address; });
  DeviceNames long_names;
  long_names.vendor = std::string(80, 'V');
  long_names.device = "GP106 [GeForce GTX 1060 3GB] " + std::string(60, 'x');
  devs[0].names = long_names;
  devs[1].physical_function = devs[0].address;
  auto slices = PoolSlices("n1", devs, dra, {}, {});
  BOOST_REQUIRE(slices.size() == 3u);
  BOOST_TEST(slices[0].device_names.size() == kMaxDevicesPerSlice);
  BOOST_TEST(slices[2].device_names.size() == 300u - 2 * kMaxDevicesPerSlice);
  BOOST_TEST(slices[1].name == "n1-pcidevices.io-1");
  simdjson::dom::parser parser;
  simdjson::dom::array devices = parser.parse(slices[0].devices_json);
  simdjson::dom::element first = devices.at(0);
  BOOST_TEST(std::string_view(first["name"]) == "pci-0000-10-00-0");
  simdjson::dom::object attrs = first["attributes"];
  BOOST_TEST(std::string_view(attrs["resource.kubernetes.io/pciBusID"]["string"]) ==
             "0000:10:00.0");
  BOOST_TEST(std::string_view(attrs["resource.kubernetes.io/pcieRoot"]["string"]) == "pci0000:10");
  BOOST_TEST(int64_t(attrs["resource.kubernetes.io/numaNode"]["int"]) == 1);
  BOOST_TEST(int64_t(attrs["iommuGroup"]["int"]) == 7);
  BOOST_TEST(std::string_view(attrs["classID"]["string"]) == "0300");
  BOOST_TEST(std::string_view(attrs["vendorName"]["string"]).size() == 64u);
  BOOST_TEST(std::string_view(attrs["deviceName"]["string"]).size() == 64u);
  BOOST_TEST(std::string_view(attrs["driver"]["string"]) == "nouveau");
  size_t count = 0;
  for (auto [k, v] : attrs) {
    (void)v;
    ++count;
    // The part after the domain is at most 32 characters.
    const std::string_view key = k;
    BOOST_TEST(key.substr(key.find('/') == std::string_view::npos ? 0 : key.find('/') + 1).size() <=
               32u);
  }
  BOOST_TEST(count <= 32u);
  // numaNode left out where sysfs says -1; the VF names its PF.
  simdjson::dom::object second = devices.at(1)["attributes"];
  BOOST_TEST(second["resource.kubernetes.io/numaNode"].error() == simdjson::NO_SUCH_FIELD);
  BOOST_TEST(std::string_view(second["sriovPF"]["string"]) == "0000:10:00.0");
  // The same inventory: the same hashes; one device less: another.
  BOOST_TEST(PoolSlices("n1", devs, dra, {}, {})[2].hash == slices[2].hash);
  dra.erase(devs.back().address);
  BOOST_TEST(PoolSlices("n1", devs, dra, {}, {})[2].hash != slices[2].hash);
  BOOST_TEST(PoolSlices("n1", devs, {}, {}, {}).empty());
}

BOOST_AUTO_TEST_CASE(usb_devices_by_port) {
  UsbDevice u;
  u.vendor_id = 0x0951;
  u.product_id = 0x1666;
  u.bus = 1;
  u.devnum = 4;
  u.port = "0000:00:14.0-2";
  u.serial = "4C53";
  u.name = "n1-0951-1666-001004";
  UsbDevice gone = u;
  gone.port = "0000:00:14.0-3";
  gone.name = "n1-0951-1666-001005";
  gone.present = false;
  auto slices = PoolSlices("n1", {}, {}, {u, gone}, {u.name, gone.name});
  BOOST_REQUIRE(slices.size() == 1u);
  BOOST_TEST(slices[0].device_names == std::vector<std::string>{"usb-0000-00-14-0-2"});
  simdjson::dom::parser parser;
  simdjson::dom::object attrs = parser.parse(slices[0].devices_json).at(0)["attributes"];
  BOOST_TEST(std::string_view(attrs["productID"]["string"]) == "1666");
  BOOST_TEST(std::string_view(attrs["serial"]["string"]) == "4C53");
  BOOST_TEST(std::string_view(attrs["bus"]["string"]) == "usb");
}

// The API server for slices: keeps them in the store as the informer would.
struct SliceServer final : KubeCaller {
  Store& store;
  std::vector<std::string> writes;
  std::vector<std::string> written;  // the slices PUT or POSTed, in order
  int64_t rv = 10;
  explicit SliceServer(Store& s) : store(s) {}
  absl::StatusOr<KubeResponse> Call(std::string_view method, const std::string& path,
                                    const std::string& body, const std::string&) override {
    if (method == "GET") return KubeResponse{200, R"({"metadata":{"name":"n1","uid":"node-uid"}})"};
    writes.push_back(std::string(method));
    const std::string name = path.substr(path.rfind('/') + 1);
    if (method == "DELETE") {
      ObservedObject o = store.Snapshot().at(name);
      store.Apply(testing::Event("DELETED", o));
      return KubeResponse{200, "{}"};
    }
    auto o = DecodeObject(body);
    BOOST_REQUIRE(o.ok());
    written.push_back(o->name);
    o->resource_version = std::to_string(++rv);
    store.Apply(testing::Event(method == "POST" ? "ADDED" : "MODIFIED", *o));
    return KubeResponse{method == "POST" ? 201 : 200, "{}"};
  }
  using KubeCaller::Call;
  std::vector<std::string> Take() {
    written.clear();
    return std::exchange(writes, {});
  }
};

std::string Address(int i) {
  return absl::StrFormat("0000:%02x:%02x.%d", 0x10 + i / 64, (i % 64) / 8, i % 8);
}

// Functions 0..n-1 offered, but for `skip`.
std::shared_ptr<const Inventory> Pool(int n, int skip = -1) {
  auto inv = std::make_shared<Inventory>();
  for (int i = 0; i < n; ++i) {
    if (i == skip) continue;
    inv->pci.push_back(Dev(Address(i)));
    inv->dra_pci.insert(inv->pci.back().address);
  }
  return inv;
}

// An empty pool on a synced store, its server and a controller.
struct SliceFixture {
  SliceFixture() { slices.Replace(ObservedList{"1", {}, {}}); }
  Store slices{kResourceSlicePlural};
  SliceServer api{slices};
  SteadyClock clock;
  Counters counters;
  ResourceSliceController c{"n1", slices, api, clock, counters, testing::Log()};
};

BOOST_FIXTURE_TEST_CASE(controller_writes_on_change_only, SliceFixture) {
  c.Handle(InventoryPublished{Pool(200)});
  c.Reconcile();
  BOOST_TEST(api.Take() == (std::vector<std::string>{"POST", "POST"}));
  BOOST_TEST(c.generation() == 1);
  auto held = slices.Snapshot();
  BOOST_TEST(held.at("n1-pcidevices.io-0").pool_generation.value_or(0) == 1);
  BOOST_TEST(held.at("n1-pcidevices.io-0").owners.at(0).name == "n1");
  // Quiet: the watch's echo and the same inventory again write nothing.
  c.Handle(StoreChanged{kResourceSlicePlural});
  c.Handle(InventoryPublished{Pool(200)});
  c.Reconcile();
  BOOST_TEST(api.Take().empty());
  // The kubelet wipes the node's slices at its start: written again, at a new generation.
  for (const auto& [name, o] : slices.Snapshot()) slices.Apply(testing::Event("DELETED", o));
  c.Handle(StoreChanged{kResourceSlicePlural});
  c.Reconcile();
  BOOST_TEST(api.Take() == (std::vector<std::string>{"POST", "POST"}));
  BOOST_TEST(c.generation() == 2);
  // A device gone: one slice left, the other deleted first.
  c.Handle(InventoryPublished{Pool(100)});
  c.Reconcile();
  BOOST_TEST(api.Take() == (std::vector<std::string>{"DELETE", "PUT"}));
  BOOST_TEST(slices.Snapshot().at("n1-pcidevices.io-0").pool_generation.value_or(0) == 3);
  // A new agent finds the pool as wanted: adopts its generation, writes nothing.
  ResourceSliceController restarted("n1", slices, api, clock, counters, testing::Log());
  restarted.Handle(InventoryPublished{Pool(100)});
  restarted.Reconcile();
  BOOST_TEST(api.Take().empty());
  BOOST_TEST(restarted.generation() == 3);
  // No DRA devices any more: the slices go.
  restarted.Handle(InventoryPublished{Pool(0)});
  restarted.Reconcile();
  BOOST_TEST(api.Take() == (std::vector<std::string>{"DELETE"}));
  BOOST_TEST(slices.Snapshot().empty());
}

BOOST_FIXTURE_TEST_CASE(controller_writes_the_changed_slice_first, SliceFixture) {
  c.Handle(InventoryPublished{Pool(300, 5)});
  c.Reconcile();
  BOOST_TEST(api.Take() == (std::vector<std::string>{"POST", "POST", "POST"}));
  auto devices_of = [&](const std::string& slice) {
    return slices.Snapshot().at(slice).slice_devices;
  };
  const auto first_slice = devices_of("n1-pcidevices.io-0");
  const std::string hot = DraPciDeviceName(*ParsePciAddress(Address(5)));
  // Function 5 plugged in: it joins the one slice with room, which is written first; every
  // slice at the new generation, the others' devices as they were.
  c.Handle(InventoryPublished{Pool(300)});
  c.Reconcile();
  BOOST_TEST(api.written.at(0) == "n1-pcidevices.io-2");
  BOOST_TEST(api.Take() == (std::vector<std::string>{"PUT", "PUT", "PUT"}));
  BOOST_TEST(c.generation() == 2);
  for (const auto& [name, o] : slices.Snapshot()) BOOST_TEST(o.pool_generation.value_or(0) == 2);
  BOOST_TEST(devices_of("n1-pcidevices.io-0") == first_slice);
  auto in_last = devices_of("n1-pcidevices.io-2");
  BOOST_TEST(std::count(in_last.begin(), in_last.end(), hot) == 1);
  // Function 200 unplugged: its slice first.
  c.Handle(InventoryPublished{Pool(300, 200)});
  c.Reconcile();
  BOOST_TEST(api.written.at(0) == "n1-pcidevices.io-1");
  BOOST_TEST(api.Take().size() == 3u);
  BOOST_TEST(devices_of("n1-pcidevices.io-1").size() == kMaxDevicesPerSlice - 1);
  // A new agent keeps the server's layout (function 5 out of name order): nothing written.
  ResourceSliceController restarted("n1", slices, api, clock, counters, testing::Log());
  restarted.Handle(InventoryPublished{Pool(300, 200)});
  restarted.Reconcile();
  BOOST_TEST(api.Take().empty());
  BOOST_TEST(restarted.generation() == 3);
  // 50 functions gone: two slices would do; the pool is laid out afresh.
  restarted.Handle(InventoryPublished{Pool(250)});
  restarted.Reconcile();
  BOOST_TEST(api.Take() == (std::vector<std::string>{"DELETE", "PUT", "PUT"}));
  BOOST_TEST(restarted.generation() == 4);
  auto first = devices_of("n1-pcidevices.io-0");
  BOOST_TEST(std::is_sorted(first.begin(), first.end()));
  BOOST_TEST(first.at(5) == hot);
}

BOOST_AUTO_TEST_CASE(slice_index_only_from_our_names) {
  BOOST_TEST(SliceIndex("n1", "n1-pcidevices.io-12").value_or(99) == 12u);
  BOOST_TEST(SliceIndex("n1", "n1-pcidevices.io-0").value_or(99) == 0u);
  for (const char* bad :
       {"n1-pcidevices.io-", "n1-pcidevices.io-01", "n1-pcidevices.io--1", "n1-pcidevices.io-1a",
        "n2-pcidevices.io-1", "n1-pcidevices.io-9999999"}) {
    BOOST_TEST(!SliceIndex("n1", bad).has_value(), bad);
  }
}

}  // namespace
}  // namespace pcid::projection
