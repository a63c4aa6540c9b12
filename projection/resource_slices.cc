#include "projection/resource_slices.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "core/json_writer.h"
#include "core/naming.h"

namespace pcid::projection {
namespace {

// The API server's limit on a string attribute (DeviceAttributeMaxValueLength); longer values
// (pci.ids names) are cut at a UTF-8 character boundary.
constexpr size_t kMaxAttributeValue = 64;

std::string_view Cut(std::string_view s) {
  if (s.size() <= kMaxAttributeValue) return s;
  size_t n = kMaxAttributeValue;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

std::string Hex4(unsigned v) { return absl::StrFormat("%04x", v); }

// Writes one device's "attributes" map; a string attribute with an empty value is left out.
class Attributes {
 public:
  explicit Attributes(JsonWriter& w) : w_(w) { w_.Key("attributes").BeginObject(); }
  ~Attributes() { w_.EndObject(); }
  void String(std::string_view key, std::string_view value) {
    if (value.empty()) return;
    w_.Key(key).BeginObject().Key("string").String(Cut(value)).EndObject();
  }
  void Int(std::string_view key, int64_t value) {
    w_.Key(key).BeginObject().Key("int").Int(value).EndObject();
  }

 private:
  JsonWriter& w_;
};

struct PoolDevice {
  std::string name;
  std::string json;  // the device's object
};

PoolDevice PciPoolDevice(const PciDevice& d, const std::string& pcie_root) {
  PoolDevice out{DraPciDeviceName(d.address), {}};
  JsonWriter w;
  w.BeginObject().Key("name").String(out.name);
  {
    Attributes a(w);
    a.String("resource.kubernetes.io/pciBusID", d.address.ToString());
    a.String("resource.kubernetes.io/pcieRoot", pcie_root);
    if (d.numa_node >= 0) a.Int("resource.kubernetes.io/numaNode", d.numa_node);
    a.String("bus", "pci");
    a.String("vendorID", Hex4(d.vendor_id));
    a.String("deviceID", Hex4(d.device_id));
    a.String("classID", Hex4(d.class_id()));
    a.String("subsystemVendorID", Hex4(d.subsystem_vendor_id));
    a.String("subsystemDeviceID", Hex4(d.subsystem_device_id));
    if (d.iommu_group) a.Int("iommuGroup", *d.iommu_group);
    a.String("resourceName", PciResourceName(d));
    a.String("driver", d.driver);
    a.String("vendorName", d.names->vendor);
    a.String("deviceName", d.names->device);
    if (d.physical_function) a.String("sriovPF", d.physical_function->ToString());
    if (d.sriov_total_vfs) a.Int("sriovTotalVFs", *d.sriov_total_vfs);
    if (d.sriov_num_vfs) a.Int("sriovNumVFs", *d.sriov_num_vfs);
  }
  w.EndObject();
  out.json = w.str();
  return out;
}

PoolDevice UsbPoolDevice(const std::string& node, const UsbDevice& u) {
  PoolDevice out{DraUsbDeviceName(u), {}};
  JsonWriter w;
  w.BeginObject().Key("name").String(out.name);
  {
    Attributes a(w);
    a.String("bus", "usb");
    a.String("vendorID", Hex4(u.vendor_id));
    a.String("productID", Hex4(u.product_id));
    a.String("usbClass", absl::StrFormat("%02x", u.device_class));
    a.String("serial", u.serial);
    a.String("port", u.port);
    if (u.host_controller) a.String("hostController", u.host_controller->ToString());
    a.String("resourceName", UsbResourceName(node, u));
    a.String("vendorName", u.names.vendor);
    a.String("productName", u.names.device);
  }
  w.EndObject();
  out.json = w.str();
  return out;
}

// FNV-1a, 64 bits: stable across processes and builds (std::hash is not promised to be).
uint64_t Fnv1a(std::string_view s, uint64_t h = 14695981039346656037ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::string DraPciDeviceName(const PciAddress& address) {
  std::string out = "pci-" + address.ToString();
  std::replace_if(
      out.begin(), out.end(), [](char c) { return c == ':' || c == '.'; }, '-');
  return out;
}

std::string DraUsbDeviceName(const UsbDevice& usb) {
  std::string out = kDraUsbPrefix;
  for (char c : usb.port) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    out.push_back(keep ? c : (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : '-');
  }
  return out;
}

std::string PcieRoot(const std::vector<PciDevice>& sorted, const PciDevice& dev) {
  const PciDevice* top = &dev;
  // Bounded: a malformed tree (a bridge loop) cannot hang the agent.
  for (int depth = 0; depth < 64 && top->parent_bridge; ++depth) {
    const PciDevice* up = FindPciDevice(sorted, *top->parent_bridge);
    if (!up) {
      // The bridge is not among the functions read: its own bus is as high as we can see.
      return absl::StrFormat("pci%04x:%02x", top->parent_bridge->domain, top->parent_bridge->bus);
    }
    top = up;
  }
  return absl::StrFormat("pci%04x:%02x", top->address.domain, top->address.bus);
}

std::optional<size_t> SliceIndex(const std::string& node, const std::string& slice_name) {
  const std::string prefix = absl::StrCat(node, "-", kDraDriverName, "-");
  if (slice_name.rfind(prefix, 0) != 0) return std::nullopt;
  const std::string_view digits = std::string_view(slice_name).substr(prefix.size());
  // As StrCat writes it: no sign, no leading zero, and small.
  if (digits.empty() || digits.size() > 6 || (digits[0] == '0' && digits.size() > 1)) {
    return std::nullopt;
  }
  size_t index = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    index = index * 10 + static_cast<size_t>(c - '0');
  }
  return index;
}

std::vector<SliceContent> PoolSlices(const std::string& node, const std::vector<PciDevice>& pci,
                                     const std::set<PciAddress>& dra_pci,
                                     const std::vector<UsbDevice>& usb,
                                     const std::set<std::string>& dra_usb,
                                     std::vector<SliceContent> previous, PoolDeviceCache* cache) {
  PoolDeviceCache built;
  std::vector<std::string> usb_objects;
  usb_objects.reserve(usb.size());                    // never reallocated: `devices` points into it
  std::map<std::string, const std::string*> devices;  // name -> object
  std::set<std::string> reused;                       // objects taken from the cache
  for (const PciAddress& address : dra_pci) {
    const PciDevice* d = FindPciDevice(pci, address);
    if (!d) continue;
    std::string root = PcieRoot(pci, *d);
    PoolDeviceCache::Entry* entry = nullptr;
    if (cache) {
      auto hit = cache->pci.find(address);
      if (hit != cache->pci.end() && hit->second.device == *d && hit->second.root == root) {
        entry = &built.pci.emplace(address, std::move(hit->second)).first->second;
        reused.insert(entry->name);
      }
    }
    if (!entry) {
      PoolDevice p = PciPoolDevice(*d, root);
      entry = &built.pci
                   .emplace(address, PoolDeviceCache::Entry{*d, std::move(root), std::move(p.name),
                                                            std::move(p.json)})
                   .first->second;
    }
    devices.emplace(entry->name, &entry->json);
  }
  for (const UsbDevice& u : usb) {
    // Two USB devices on one port cannot be; a duplicate name would be refused by the server.
    if (!u.present || !dra_usb.count(u.name)) continue;
    PoolDevice p = UsbPoolDevice(node, u);
    usb_objects.push_back(std::move(p.json));
    devices.emplace(std::move(p.name), &usb_objects.back());
  }
  const size_t needed = (devices.size() + kMaxDevicesPerSlice - 1) / kMaxDevicesPerSlice;
  // Each slice keeps the devices it had that are still offered; new ones fill the first slice
  // with room, or a new one at the lowest free index.
  std::map<size_t, std::set<std::string>> layout;
  std::set<std::string> placed;
  for (const SliceContent& s : previous) {
    auto index = SliceIndex(node, s.name);
    if (!index || layout.count(*index)) continue;
    auto& names = layout[*index];
    for (const std::string& n : s.device_names) {
      if (names.size() < kMaxDevicesPerSlice && devices.count(n) && placed.insert(n).second) {
        names.insert(n);
      }
    }
    if (names.empty()) layout.erase(*index);
  }
  for (const auto& [name, json] : devices) {
    if (placed.count(name)) continue;
    auto room = std::find_if(layout.begin(), layout.end(),
                             [](const auto& e) { return e.second.size() < kMaxDevicesPerSlice; });
    if (room == layout.end()) {
      size_t free = 0;
      while (layout.count(free)) ++free;
      room = layout.emplace(free, std::set<std::string>{}).first;
    }
    room->second.insert(name);
  }
  // Removals can leave more slices than the devices need: then the pool is laid out afresh, in
  // name order (a change of the slice count rewrites every slice anyway).
  if (layout.size() > needed) {
    layout.clear();
    size_t k = 0;
    for (const auto& [name, json] : devices) layout[k++ / kMaxDevicesPerSlice].insert(name);
  }
  std::vector<SliceContent> slices;
  const size_t count = layout.size();
  for (const auto& [index, names] : layout) {
    SliceContent s;
    s.name = absl::StrCat(node, "-", kDraDriverName, "-", index);
    // A slice with the same devices, every one of them unchanged, and the same slice count: as
    // it was (most slices of most changes).
    auto before = std::find_if(previous.begin(), previous.end(),
                               [&](const SliceContent& p) { return p.name == s.name; });
    if (before != previous.end() && !before->devices_json.empty() && previous.size() == count &&
        std::equal(names.begin(), names.end(), before->device_names.begin(),
                   before->device_names.end()) &&
        std::all_of(names.begin(), names.end(),
                    [&](const std::string& n) { return reused.count(n) > 0; })) {
      slices.push_back(std::move(*before));
      continue;
    }
    s.devices_json = "[";
    for (const std::string& n : names) {
      if (s.devices_json.size() > 1) s.devices_json += ",";
      s.devices_json += *devices.at(n);
      s.device_names.push_back(n);
    }
    s.devices_json += "]";
    s.hash = absl::StrFormat("%016x", Fnv1a(absl::StrCat(count), Fnv1a(s.devices_json)));
    slices.push_back(std::move(s));
  }
  if (cache) *cache = std::move(built);
  return slices;
}

std::string SliceObject(const std::string& node, const std::string& node_uid,
                        const SliceContent& slice, int64_t generation, size_t slice_count,
                        std::string_view resource_version) {
  JsonWriter w;
  w.BeginObject()
      .Key("apiVersion")
      .String("resource.k8s.io/v1")
      .Key("kind")
      .String("ResourceSlice")
      .Key("metadata")
      .BeginObject()
      .Key("name")
      .String(slice.name);
  if (!resource_version.empty()) w.Key("resourceVersion").String(resource_version);
  w.Key("labels").BeginObject().Key(kSliceContentLabel).String(slice.hash).EndObject();
  if (!node_uid.empty()) {
    w.Key("ownerReferences")
        .BeginArray()
        .BeginObject()
        .Key("apiVersion")
        .String("v1")
        .Key("kind")
        .String("Node")
        .Key("name")
        .String(node)
        .Key("uid")
        .String(node_uid)
        .Key("controller")
        .Bool(true)
        .EndObject()
        .EndArray();
  }
  w.EndObject()
      .Key("spec")
      .BeginObject()
      .Key("driver")
      .String(kDraDriverName)
      .Key("pool")
      .BeginObject()
      .Key("name")
      .String(node)
      .Key("generation")
      .Int(generation)
      .Key("resourceSliceCount")
      .Int(static_cast<int64_t>(slice_count))
      .EndObject()
      .Key("nodeName")
      .String(node)
      .Key("devices");
  // The devices array is spliced in as built (JsonWriter has no raw values).
  std::string out = w.str();
  out += slice.devices_json;
  out += "}}";
  return out;
}

}  // namespace pcid::projection
