// The intent file: which devices are enabled, by whom, and what driver each had before; which
// PFs have how many VFs, for whom.
#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <fcntl.h>
#include <simdjson.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <functional>

#include "core/json_writer.h"
#include "core/mdev.h"
#include "core/status.h"
#include "core/text_file.h"
#include "core/write_all.h"
#include "vfio/vfio.h"

namespace pcid::vfio {
namespace {

constexpr char kStateFile[] = "state.json";
constexpr size_t kMaxStateSize = 16 << 20;

}  // namespace

void EncodeStateInPieces(const NodeState& state,
                         const std::function<void(std::string_view)>& piece) {
  // Below malloc's mmap threshold (128 KB), so that the buffer comes from the heap, whose pages
  // stay mapped from one save to the next.
  constexpr size_t kPiece = 32 << 10;
  JsonWriter w(2);
  auto element_done = [&] {
    if (w.str().size() >= kPiece) w.Drain(piece);
  };
  w.BeginObject().Key("version").Int(1).Key("devices").BeginArray();
  for (const auto& [address, intent] : state.devices) {
    w.BeginObject()
        .Key("address")
        .String(address.ToString())
        .Key("enabled")
        .Bool(intent.enabled)
        .Key("originalDriver")
        .String(intent.original_driver)
        .Key("sources")
        .BeginArray();
    for (const std::string& s : intent.sources) w.String(s);
    w.EndArray();
    if (!intent.ids.empty()) w.Key("ids").String(intent.ids);
    w.EndObject();
    element_done();
  }
  w.EndArray();
  // Only when there is one: state files stay as they were for nodes without SR-IOV intents.
  if (!state.vf_counts.empty()) {
    w.Key("vfCounts").BeginArray();
    for (const auto& [address, intent] : state.vf_counts) {
      w.BeginObject()
          .Key("address")
          .String(address.ToString())
          .Key("count")
          .Int(intent.count)
          .Key("originalCount")
          .Int(intent.original_count)
          .Key("sources")
          .BeginArray();
      for (const std::string& s : intent.sources) w.String(s);
      w.EndArray();
      if (!intent.ids.empty()) w.Key("ids").String(intent.ids);
      if (intent.drivers_autoprobe) w.Key("driversAutoprobe").Bool(*intent.drivers_autoprobe);
      if (intent.original_drivers_autoprobe) {
        w.Key("originalDriversAutoprobe").Bool(*intent.original_drivers_autoprobe);
      }
      w.EndObject();
      element_done();
    }
    w.EndArray();
  }
  if (!state.mdevs.empty()) {
    w.Key("mdevs").BeginArray();
    for (const auto& [uuid, intent] : state.mdevs) {
      w.BeginObject().Key("uuid").String(uuid).Key("parent").String(intent.parent);
      w.Key("type").String(intent.type).Key("sources").BeginArray();
      for (const std::string& s : intent.sources) w.String(s);
      w.EndArray().EndObject();
      element_done();
    }
    w.EndArray();
  }
  if (!state.vgpu_types.empty()) {
    w.Key("vgpuTypes").BeginArray();
    for (const auto& [address, intent] : state.vgpu_types) {
      w.BeginObject().Key("address").String(address.ToString()).Key("type").String(intent.type);
      w.Key("sources").BeginArray();
      for (const std::string& s : intent.sources) w.String(s);
      w.EndArray().EndObject();
      element_done();
    }
    w.EndArray();
  }
  if (!state.usb_devices.empty()) {
    w.Key("usbDevices").BeginArray();
    for (const auto& [name, record] : state.usb_devices) {
      const UsbDevice& d = record.device;
      w.BeginObject()
          .Key("name")
          .String(name)
          .Key("vendorId")
          .String(absl::StrFormat("%04x", d.vendor_id))
          .Key("productId")
          .String(absl::StrFormat("%04x", d.product_id))
          .Key("class")
          .String(absl::StrFormat("%02x", d.device_class))
          .Key("serial")
          .String(d.serial)
          .Key("port")
          .String(d.port)
          .Key("bus")
          .Int(d.bus)
          .Key("devnum")
          .Int(d.devnum)
          .Key("pciAddress")
          .String(d.host_controller ? d.host_controller->ToString() : "")
          .Key("claimed")
          .Bool(record.claimed)
          .EndObject();
      element_done();
    }
    w.EndArray();
  }
  w.EndObject();
  w.Drain(piece);
  piece("\n");
}

std::string EncodeState(const NodeState& state) {
  std::string out;
  EncodeStateInPieces(state, [&](std::string_view piece) { out.append(piece); });
  return out;
}

namespace {

using Bad = std::function<absl::Status(std::string_view)>;

// Optional (state files written before it existed): "vvvv:dddd", lower-case hex.
absl::Status ReadIds(simdjson::dom::element e, const std::string& where, const Bad& bad,
                     std::string& out) {
  simdjson::dom::element ids;
  if (e["ids"].get(ids)) return absl::OkStatus();
  std::string_view text;
  if (ids.get(text) || text.size() != 9 || text[4] != ':' ||
      text.find_first_not_of("0123456789abcdef:") != std::string_view::npos) {
    return bad(absl::StrCat(where, ": ids must be \"vvvv:dddd\""));
  }
  out = std::string(text);
  return absl::OkStatus();
}

absl::Status ReadSources(simdjson::dom::array sources, const std::string& where, const Bad& bad,
                         std::set<std::string>& out) {
  for (simdjson::dom::element s : sources) {
    std::string_view source;
    if (s.get(source)) return bad(absl::StrCat(where, ": sources must be strings"));
    out.emplace(source);
  }
  return absl::OkStatus();
}

// The kernel's own limit on sriov_numvfs is 65535 (a u16 in the SR-IOV capability).
absl::StatusOr<unsigned> ReadCount(simdjson::dom::element e, const char* key,
                                   const std::string& where, const Bad& bad) {
  int64_t v = -1;
  if (e[key].get(v) || v < 0 || v > 65535) {
    return bad(absl::StrCat(where, ": ", key, " must be 0 to 65535"));
  }
  return static_cast<unsigned>(v);
}

// Text fields of a USB record: printable ASCII only (what discovery keeps), at most `max` bytes.
bool PlainText(std::string_view s, size_t max) {
  return s.size() <= max &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

absl::StatusOr<uint32_t> ReadHexField(simdjson::dom::element e, const char* key, int digits,
                                      const std::string& where, const Bad& bad) {
  std::string_view text;
  if (e[key].get(text) || text.size() != static_cast<size_t>(digits) ||
      text.find_first_not_of("0123456789abcdef") != std::string_view::npos) {
    return bad(absl::StrCat(where, ": ", key, " must be ", digits, " lower-case hex digits"));
  }
  return static_cast<uint32_t>(std::stoul(std::string(text), nullptr, 16));
}

absl::Status ReadUsbRecords(simdjson::dom::element root, const Bad& bad, NodeState& out) {
  simdjson::dom::element field;
  if (root["usbDevices"].get(field)) return absl::OkStatus();  // absent: none
  simdjson::dom::array records;
  if (field.get(records)) return bad("\"usbDevices\" must be an array");
  size_t i = 0;
  for (simdjson::dom::element e : records) {
    const std::string where = absl::StrCat("usbDevices[", i++, "]");
    std::string_view name, serial, port, controller;
    int64_t bus = 0, devnum = 0;
    UsbRecord record;
    if (e["name"].get(name) || e["serial"].get(serial) || e["port"].get(port) ||
        e["pciAddress"].get(controller) || e["bus"].get(bus) || e["devnum"].get(devnum) ||
        e["claimed"].get(record.claimed)) {
      return bad(absl::StrCat(where, ": want name, vendorId, productId, class, serial, port, bus, ",
                              "devnum, pciAddress and claimed"));
    }
    // Whatever name the agent gave (node names are not checked by the agent): not empty,
    // printable ASCII.
    if (name.empty() || !PlainText(name, 512)) {
      return bad(absl::StrCat(where, ": name must be printable ASCII"));
    }
    if (!PlainText(serial, 126) || !PlainText(port, 512)) {
      return bad(absl::StrCat(where, ": serial and port must be printable ASCII"));
    }
    if (bus < 1 || bus > 999 || devnum < 1 || devnum > 999) {
      return bad(absl::StrCat(where, ": bus and devnum must be 1 to 999"));
    }
    UsbDevice& d = record.device;
    PCID_ASSIGN_OR_RETURN(const uint32_t vendor, ReadHexField(e, "vendorId", 4, where, bad));
    PCID_ASSIGN_OR_RETURN(const uint32_t product, ReadHexField(e, "productId", 4, where, bad));
    PCID_ASSIGN_OR_RETURN(const uint32_t cls, ReadHexField(e, "class", 2, where, bad));
    d.vendor_id = static_cast<uint16_t>(vendor);
    d.product_id = static_cast<uint16_t>(product);
    d.device_class = static_cast<uint8_t>(cls);
    d.bus = static_cast<unsigned>(bus);
    d.devnum = static_cast<unsigned>(devnum);
    d.serial = std::string(serial);
    d.port = std::string(port);
    d.name = std::string(name);
    if (!controller.empty()) {
      auto a = ParsePciAddress(controller);
      if (!a.ok()) return bad(absl::StrCat(where, ": ", a.status().message()));
      d.host_controller = *a;
    }
    if (!out.usb_devices.emplace(d.name, std::move(record)).second) {
      return bad(absl::StrCat(where, ": ", ToAbsl(name), " listed twice"));
    }
  }
  return absl::OkStatus();
}

// Optional: "mdevs": [{"uuid", "parent", "type", "sources"}]. Parent and type become path
// components (class/mdev_bus/<parent>/mdev_supported_types/<type>/create).
absl::Status ReadMdevIntents(simdjson::dom::element root, const Bad& bad, NodeState& out) {
  simdjson::dom::element mdevs;
  if (root["mdevs"].get(mdevs)) return absl::OkStatus();  // absent: none
  simdjson::dom::array list;
  if (mdevs.get(list)) return bad("\"mdevs\" must be an array");
  size_t i = 0;
  for (simdjson::dom::element e : list) {
    const std::string where = absl::StrCat("mdevs[", i++, "]");
    std::string_view uuid, parent, type;
    simdjson::dom::array sources;
    if (e["uuid"].get(uuid) || e["parent"].get(parent) || e["type"].get(type) ||
        e["sources"].get(sources)) {
      return bad(absl::StrCat(where, ": want uuid, parent, type and sources"));
    }
    auto parsed = ParseUuid(uuid);
    if (!parsed.ok() || *parsed != uuid) {
      return bad(absl::StrCat(where, ": uuid must be a UUID in lower case"));
    }
    if (!IsMdevComponent(parent) || !IsMdevComponent(type)) {
      return bad(absl::StrCat(where, ": bad parent or type name"));
    }
    MdevIntent intent{std::string(parent), std::string(type), {}};
    PCID_RETURN_IF_ERROR(ReadSources(sources, where, bad, intent.sources));
    if (!out.mdevs.emplace(std::string(uuid), std::move(intent)).second) {
      return bad(absl::StrCat(where, ": ", ToAbsl(uuid), " listed twice"));
    }
  }
  return absl::OkStatus();
}

// Optional: "vgpuTypes": [{"address", "type", "sources"}]. The type is written to a sysfs file:
// decimal digits only.
absl::Status ReadVgpuTypeIntents(simdjson::dom::element root, const Bad& bad, NodeState& out) {
  simdjson::dom::element types;
  if (root["vgpuTypes"].get(types)) return absl::OkStatus();  // absent: none
  simdjson::dom::array list;
  if (types.get(list)) return bad("\"vgpuTypes\" must be an array");
  size_t i = 0;
  for (simdjson::dom::element e : list) {
    const std::string where = absl::StrCat("vgpuTypes[", i++, "]");
    std::string_view address, type;
    simdjson::dom::array sources;
    if (e["address"].get(address) || e["type"].get(type) || e["sources"].get(sources)) {
      return bad(absl::StrCat(where, ": want address, type and sources"));
    }
    auto a = ParsePciAddress(address);
    if (!a.ok()) return bad(absl::StrCat(where, ": ", a.status().message()));
    if (type.empty() || type.size() > 10 ||
        !std::all_of(type.begin(), type.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return bad(absl::StrCat(where, ": type must be a decimal type id"));
    }
    VgpuTypeIntent intent{std::string(type), {}};
    PCID_RETURN_IF_ERROR(ReadSources(sources, where, bad, intent.sources));
    if (!out.vgpu_types.emplace(*a, std::move(intent)).second) {
      return bad(absl::StrCat(where, ": ", ToAbsl(address), " listed twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NodeState> DecodeState(std::string_view json, std::string_view origin) {
  const Bad bad = [&](std::string_view why) {
    return absl::DataLossError(absl::StrCat(ToAbsl(origin), ": ", ToAbsl(why)));
  };
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(json.data(), json.size()).get(root); err) {
    return bad(absl::StrCat("not valid JSON: ", simdjson::error_message(err)));
  }
  int64_t version = 0;
  simdjson::dom::array devices;
  if (root["version"].get(version) || version != 1) return bad("want \"version\": 1");
  if (root["devices"].get(devices)) return bad("want a \"devices\" array");
  NodeState out;
  PCID_RETURN_IF_ERROR(ReadUsbRecords(root, bad, out));
  PCID_RETURN_IF_ERROR(ReadMdevIntents(root, bad, out));
  PCID_RETURN_IF_ERROR(ReadVgpuTypeIntents(root, bad, out));
  size_t i = 0;
  for (simdjson::dom::element e : devices) {
    const std::string where = absl::StrCat("devices[", i++, "]");
    std::string_view address, driver;
    bool enabled = false;
    simdjson::dom::array sources;
    if (e["address"].get(address) || e["enabled"].get(enabled) || e["originalDriver"].get(driver) ||
        e["sources"].get(sources)) {
      return bad(absl::StrCat(where, ": want address, enabled, originalDriver and sources"));
    }
    auto a = ParsePciAddress(address);
    if (!a.ok()) return bad(absl::StrCat(where, ": ", a.status().message()));
    // A driver name becomes part of a path (drivers/<name>/bind): one plain component only.
    if (driver.find('/') != std::string_view::npos || driver == "." || driver == ".." ||
        driver.size() > 64) {
      return bad(absl::StrCat(where, ": bad originalDriver"));
    }
    Intent intent{enabled, std::string(driver), {}, ""};
    PCID_RETURN_IF_ERROR(ReadIds(e, where, bad, intent.ids));
    PCID_RETURN_IF_ERROR(ReadSources(sources, where, bad, intent.sources));
    if (!out.devices.emplace(*a, std::move(intent)).second) {
      return bad(absl::StrCat(where, ": ", ToAbsl(address), " listed twice"));
    }
  }
  simdjson::dom::element vf_counts;
  if (root["vfCounts"].get(vf_counts)) return out;  // absent: none
  simdjson::dom::array pfs;
  if (vf_counts.get(pfs)) return bad("\"vfCounts\" must be an array");
  i = 0;
  for (simdjson::dom::element e : pfs) {
    const std::string where = absl::StrCat("vfCounts[", i++, "]");
    std::string_view address;
    simdjson::dom::array sources;
    if (e["address"].get(address) || e["sources"].get(sources)) {
      return bad(absl::StrCat(where, ": want address, count, originalCount and sources"));
    }
    auto a = ParsePciAddress(address);
    if (!a.ok()) return bad(absl::StrCat(where, ": ", a.status().message()));
    VfCountIntent intent;
    PCID_ASSIGN_OR_RETURN(intent.count, ReadCount(e, "count", where, bad));
    PCID_ASSIGN_OR_RETURN(intent.original_count, ReadCount(e, "originalCount", where, bad));
    PCID_RETURN_IF_ERROR(ReadIds(e, where, bad, intent.ids));
    PCID_RETURN_IF_ERROR(ReadSources(sources, where, bad, intent.sources));
    for (const auto& [key, field] :
         {std::pair{"driversAutoprobe", &intent.drivers_autoprobe},
          {"originalDriversAutoprobe", &intent.original_drivers_autoprobe}}) {
      if (simdjson::dom::element probe; !e[key].get(probe)) {
        bool v = false;
        if (probe.get(v)) return bad(absl::StrCat(where, ": ", key, " must be a boolean"));
        *field = v;
      }
    }
    if (!out.vf_counts.emplace(*a, std::move(intent)).second) {
      return bad(absl::StrCat(where, ": ", ToAbsl(address), " listed twice"));
    }
  }
  return out;
}

absl::StatusOr<StateStore> StateStore::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("create ", dir, ": ", ec.message()));
  ::chmod(dir.c_str(), 0700);
  const std::string lock_path = absl::StrCat(dir, "/lock");
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.valid()) return ErrnoStatus(errno, absl::StrCat("open ", lock_path));
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::UnavailableError(
          absl::StrCat(lock_path, " is held by another pcidevices process (the daemon?)"));
    }
    return ErrnoStatus(errno, absl::StrCat("flock ", lock_path));
  }
  StateStore store(dir, std::move(lock));
  const std::string path = absl::StrCat(dir, "/", kStateFile);
  auto text = ReadTextFile(path, kMaxStateSize);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return store;  // first start
    return text.status();
  }
  PCID_ASSIGN_OR_RETURN(NodeState saved, DecodeState(*text, path));
  {
    MutexLock lock(&store.state_->mu);
    store.state_->saved = std::move(saved);
    MutexLock snapshot_lock(&store.state_->snapshot_mu);
    store.state_->snapshot =
        std::make_shared<const std::map<PciAddress, Intent>>(store.state_->saved.devices);
    store.state_->vf_counts = store.state_->saved.vf_counts;
    store.state_->mdevs = store.state_->saved.mdevs;
    store.state_->vgpu_types = store.state_->saved.vgpu_types;
  }
  return store;
}

std::map<PciAddress, Intent> StateStore::intents() const { return *intents_snapshot(); }

std::shared_ptr<const std::map<PciAddress, Intent>> StateStore::intents_snapshot() const {
  MutexLock lock(&state_->snapshot_mu);
  return state_->snapshot;
}

std::optional<Intent> StateStore::Find(const PciAddress& a) const {
  const auto intents = intents_snapshot();
  auto it = intents->find(a);
  if (it == intents->end()) return std::nullopt;
  return it->second;
}

std::map<PciAddress, VfCountIntent> StateStore::vf_counts() const {
  MutexLock lock(&state_->snapshot_mu);
  return state_->vf_counts;
}

std::optional<VfCountIntent> StateStore::FindVfCount(const PciAddress& pf) const {
  MutexLock lock(&state_->snapshot_mu);
  auto it = state_->vf_counts.find(pf);
  if (it == state_->vf_counts.end()) return std::nullopt;
  return it->second;
}

absl::Status StateStore::Put(const PciAddress& a, std::optional<Intent> intent) {
  return Update([&](std::map<PciAddress, Intent>& intents) {
    if (intent) {
      intents[a] = *std::move(intent);
    } else {
      intents.erase(a);
    }
  });
}

absl::Status StateStore::Update(const std::function<void(std::map<PciAddress, Intent>&)>& change) {
  // Held across the save: two binds saving at once must not lose each other's change.
  MutexLock lock(&state_->mu);
  // Changed in place, not in a copy of the whole state: with hundreds of intents (a DRA claim
  // each) the copies cost more than the save. The snapshot is the last save's devices: what a
  // failed save goes back to.
  std::map<PciAddress, Intent>& devices = state_->saved.devices;
  change(devices);
  if (absl::Status st = Save(state_->saved); !st.ok()) {
    MutexLock snapshot_lock(&state_->snapshot_mu);
    devices = *state_->snapshot;
    return st;
  }
  auto snapshot = std::make_shared<const std::map<PciAddress, Intent>>(devices);
  {
    MutexLock snapshot_lock(&state_->snapshot_mu);
    state_->snapshot.swap(snapshot);
  }
  // The previous snapshot (thousands of intents) is freed here, if no reader holds it, not under
  // snapshot_mu: the owner thread takes that lock for every look at the intents.
  return absl::OkStatus();
}

absl::Status StateStore::PutVfCount(const PciAddress& pf, std::optional<VfCountIntent> intent) {
  MutexLock lock(&state_->mu);
  NodeState next = state_->saved;
  if (intent) {
    next.vf_counts[pf] = *std::move(intent);
  } else {
    next.vf_counts.erase(pf);
  }
  PCID_RETURN_IF_ERROR(Save(next));
  state_->saved = std::move(next);
  MutexLock snapshot_lock(&state_->snapshot_mu);
  state_->vf_counts = state_->saved.vf_counts;
  return absl::OkStatus();
}

std::map<std::string, MdevIntent> StateStore::mdevs() const {
  MutexLock lock(&state_->snapshot_mu);
  return state_->mdevs;
}

std::optional<MdevIntent> StateStore::FindMdev(const std::string& uuid) const {
  MutexLock lock(&state_->snapshot_mu);
  auto it = state_->mdevs.find(uuid);
  if (it == state_->mdevs.end()) return std::nullopt;
  return it->second;
}

absl::Status StateStore::UpdateMdevs(
    const std::function<void(std::map<std::string, MdevIntent>&)>& change) {
  MutexLock lock(&state_->mu);
  NodeState next = state_->saved;
  change(next.mdevs);
  if (next.mdevs == state_->saved.mdevs) return absl::OkStatus();
  PCID_RETURN_IF_ERROR(Save(next));
  state_->saved = std::move(next);
  MutexLock snapshot_lock(&state_->snapshot_mu);
  state_->mdevs = state_->saved.mdevs;
  return absl::OkStatus();
}

std::map<PciAddress, VgpuTypeIntent> StateStore::vgpu_types() const {
  MutexLock lock(&state_->snapshot_mu);
  return state_->vgpu_types;
}

absl::Status StateStore::UpdateVgpuTypes(
    const std::function<void(std::map<PciAddress, VgpuTypeIntent>&)>& change) {
  MutexLock lock(&state_->mu);
  NodeState next = state_->saved;
  change(next.vgpu_types);
  if (next.vgpu_types == state_->saved.vgpu_types) return absl::OkStatus();
  PCID_RETURN_IF_ERROR(Save(next));
  state_->saved = std::move(next);
  MutexLock snapshot_lock(&state_->snapshot_mu);
  state_->vgpu_types = state_->saved.vgpu_types;
  return absl::OkStatus();
}

std::map<std::string, UsbRecord> StateStore::usb_devices() const {
  MutexLock lock(&state_->mu);
  return state_->saved.usb_devices;
}

absl::Status StateStore::PutUsbDevices(std::map<std::string, UsbRecord> records) {
  MutexLock lock(&state_->mu);
  if (records == state_->saved.usb_devices) return absl::OkStatus();
  NodeState next = state_->saved;
  next.usb_devices = std::move(records);
  PCID_RETURN_IF_ERROR(Save(next));
  state_->saved = std::move(next);
  return absl::OkStatus();
}

absl::Status StateStore::Save(const NodeState& state) const {
  const std::string path = absl::StrCat(dir_, "/", kStateFile);
  const std::string tmp = absl::StrCat(path, ".tmp");
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("open ", tmp));
    int err = 0;
    EncodeStateInPieces(state, [&](std::string_view piece) {
      if (err == 0) err = WriteAll(fd.get(), piece);
    });
    if (err != 0) return ErrnoStatus(err, absl::StrCat("write ", tmp));
    if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, absl::StrCat("fsync ", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("rename ", tmp, " to ", path));
  }
  // The rename itself must reach the disk before we act on the intent.
  UniqueFd dirfd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dirfd.valid() || ::fsync(dirfd.get()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("fsync ", dir_));
  }
  return absl::OkStatus();
}

}  // namespace pcid::vfio
