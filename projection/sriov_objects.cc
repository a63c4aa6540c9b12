#include "projection/sriov_objects.h"

#include <absl/strings/ascii.h>
#include <absl/strings/str_cat.h>

#include <algorithm>
#include <limits>

#include "core/json_writer.h"
#include "core/naming.h"
#include "core/resource_json.h"

namespace pcid::projection {
namespace {

// A DNS-1123 subdomain, what the API server accepts as a cluster-scoped object's name. Interface
// names may hold characters it refuses ('_', '@'); such a PF cannot have an object.
bool IsDnsSubdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  char prev = '.';
  for (char c : s) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && c != '-' && c != '.') return false;
    if (c == '.' && prev == '-') return false;  // a label ends with an alphanumeric
    if ((c == '-' || c == '.') && prev == '.') return false;
    prev = c;
  }
  return prev != '-' && prev != '.';
}

std::string Object(SriovKind kind, const std::string& name, const PciDevice& pf,
                   const std::string& node, const std::string& interface_name) {
  JsonWriter w;
  w.BeginObject();
  w.Key("apiVersion").String(kDevicesApiVersion);
  w.Key("kind").String(kind == SriovKind::kNetwork ? "SRIOVNetworkDevice" : "SRIOVGPUDevice");
  w.Key("metadata").BeginObject();
  w.Key("name").String(name);
  w.Key("labels").BeginObject().Key("nodename").String(node).EndObject();
  if (kind == SriovKind::kNetwork) {
    w.Key("annotations").BeginObject();
    w.Key(kInterfaceNameAnnotation).String(interface_name);
    w.EndObject();
  }
  w.EndObject();
  w.Key("spec").BeginObject();
  w.Key("address").String(pf.address.ToString());
  w.Key("nodeName").String(node);
  if (kind == SriovKind::kNetwork) {
    w.Key("numVFs").Int(0);  // upstream always serialises it, 0 included
  } else {
    w.Key("enabled").Bool(false);
  }
  w.EndObject();
  w.EndObject();
  return w.str();
}

void WriteStrings(JsonWriter& w, const std::vector<std::string>& list) {
  w.BeginArray();
  for (const std::string& s : list) w.String(s);
  w.EndArray();
}

}  // namespace

const char* SriovPlural(SriovKind kind) {
  return kind == SriovKind::kNetwork ? kSriovNetworkPlural : kSriovGpuPlural;
}

std::string SriovSource(SriovKind kind, const std::string& name) {
  return absl::StrCat(kind == SriovKind::kNetwork ? "SRIOVNetworkDevice/" : "SRIOVGPUDevice/",
                      name);
}

SriovOffers OfferedSriovObjects(const std::vector<PciDevice>& pci, const std::string& node,
                                const std::set<PciAddress>& protected_pfs) {
  SriovOffers out;
  for (const PciDevice& d : pci) {
    if (!d.sriov_total_vfs || *d.sriov_total_vfs == 0 || d.physical_function) continue;
    const bool network = d.class_code == 0x02;
    if (!network && d.class_code != 0x03) continue;
    const std::string address = d.address.ToString();
    if (protected_pfs.count(d.address)) {
      out.skipped.push_back(absl::StrCat(address, ": protected (the host needs it)"));
      continue;
    }
    SriovOffer offer{d.address, "", *d.sriov_total_vfs, {}, ""};
    for (const PciAddress& vf : d.virtual_functions) offer.vfs.push_back(vf.ToString());
    std::string name;
    if (network) {
      // A NIC bound to vfio-pci (or to no driver) has no interface: nothing to name it after.
      if (d.net_interfaces.empty()) continue;
      offer.interface_name = d.net_interfaces.front();
      name = absl::AsciiStrToLower(absl::StrCat(node, "-", offer.interface_name));
    } else {
      name = PciObjectName(node, d.address);
    }
    auto& objects = network ? out.network : out.gpu;
    if (!IsDnsSubdomain(name)) {
      out.skipped.push_back(
          absl::StrCat(address, ": \"", name, "\" is not a valid object name (DNS subdomain)"));
      continue;
    }
    if (objects.count(name)) {
      out.skipped.push_back(
          absl::StrCat(address, ": \"", name, "\" already names ", objects.at(name).pf.ToString()));
      continue;
    }
    offer.object_json = Object(network ? SriovKind::kNetwork : SriovKind::kGpu, name, d, node,
                               offer.interface_name);
    objects.emplace(std::move(name), std::move(offer));
  }
  return out;
}

void KeepObjectsOfInterfacelessPfs(SriovOffers& offers, const std::vector<PciDevice>& pci,
                                   const std::map<std::string, ObservedObject>& network,
                                   const std::string& node,
                                   const std::set<PciAddress>& protected_pfs) {
  std::map<std::string, const PciDevice*> interfaceless;
  for (const PciDevice& d : pci) {
    if (d.class_code == 0x02 && d.sriov_total_vfs && *d.sriov_total_vfs > 0 &&
        !d.physical_function && d.net_interfaces.empty() && !protected_pfs.count(d.address)) {
      interfaceless[d.address.ToString()] = &d;
    }
  }
  if (interfaceless.empty()) return;
  for (const auto& [name, o] : network) {
    auto address = o.spec.find("address");
    if (o.node_label != node || o.deleting || offers.network.count(name) ||
        address == o.spec.end()) {
      continue;
    }
    auto pf = interfaceless.find(address->second);
    if (pf == interfaceless.end()) continue;
    const PciDevice& d = *pf->second;
    SriovOffer offer{d.address, "", *d.sriov_total_vfs, {}, ""};
    for (const PciAddress& vf : d.virtual_functions) offer.vfs.push_back(vf.ToString());
    offers.network.emplace(name, std::move(offer));  // exists: never created from this offer
    interfaceless.erase(pf);
  }
}

std::variant<CountAsk, SpecRefusal> AskOfSpec(SriovKind kind, const ObservedObject& o,
                                              const SriovOffer& offer, const std::string& node) {
  const std::string address = offer.pf.ToString();
  if (auto refused = RefuseOtherTarget(o, address, node, "the PF")) return *refused;
  auto has = [&](const char* key) { return SpecHas(o, key); };
  std::optional<bool> autoprobe;
  if (has("driversAutoprobe")) {
    auto it = o.spec_bools.find("driversAutoprobe");
    if (it == o.spec_bools.end()) return SpecRefusal{"spec.driversAutoprobe must be a boolean"};
    autoprobe = it->second;
  }
  CountAsk ask{address, std::nullopt, std::nullopt};
  if (kind == SriovKind::kNetwork) {
    int64_t n = 0;
    if (has("numVFs")) {
      auto it = o.spec_ints.find("numVFs");
      if (it == o.spec_ints.end() || it->second < 0 ||
          it->second > std::numeric_limits<unsigned>::max()) {
        return SpecRefusal{"spec.numVFs must be a non-negative integer"};
      }
      n = it->second;
    }
    if (n > 0) ask.count = static_cast<unsigned>(n);
  } else {
    bool enabled = false;
    if (has("enabled")) {
      auto it = o.spec_bools.find("enabled");
      if (it == o.spec_bools.end()) return SpecRefusal{"spec.enabled must be a boolean"};
      enabled = it->second;
    }
    if (enabled) ask.count = offer.total_vfs;  // all of them, as sriov-manage -e makes
  }
  if (ask.count) ask.drivers_autoprobe = autoprobe;  // meaningless for a give-back
  return ask;
}

bool RetryWorthy(const std::string& reason) {
  return reason != "InvalidSpec" && reason != "InvalidAddress" && reason != "InvalidCount" &&
         reason != "NotSriov" && reason != "TooManyVFs" && reason != "Protected";
}

std::vector<std::string> VfObjectNames(const std::vector<std::string>& vfs,
                                       const std::string& node) {
  std::vector<std::string> out;
  for (const std::string& vf : vfs) {
    if (auto a = ParsePciAddress(vf); a.ok()) out.push_back(PciObjectName(node, *a));
  }
  return out;
}

std::optional<std::string> SriovStatusPatch(SriovKind kind, const ObservedObject& o,
                                            std::vector<std::string> vfs, const Condition& ready,
                                            const std::string& node, std::string_view now,
                                            const std::set<std::string>& vgpu_objects) {
  // Address order is the VF index order (a VF's routing ID grows with its index); upstream lists
  // them in virtfn* glob order (virtfn0, virtfn1, virtfn10, ...), which no reader relies on.
  std::sort(vfs.begin(), vfs.end());
  return StatusPatchIfChanged(o, [&](JsonWriter& w) {
    w.BeginObject();
    if (kind == SriovKind::kNetwork) {
      // Upstream's meaning: Enabled once VFs exist. With numVFs 0 the PF keeps what it had
      // before (another source's VFs included), and says so.
      w.Key("status").String(vfs.empty() ? kNetworkDisabled : kNetworkEnabled);
      w.Key("vfAddresses");
      WriteStrings(w, vfs);
      w.Key("vfPCIDevices");
      WriteStrings(w, VfObjectNames(vfs, node));
    } else {
      w.Key("vfAddresses");
      WriteStrings(w, vfs);
      // Only VFs that have a VGPUDevice (mdev parents): a name here must point at an object.
      std::vector<std::string> vgpus = VfObjectNames(vfs, node);
      std::erase_if(vgpus, [&](const std::string& name) { return !vgpu_objects.count(name); });
      w.Key("vGPUDevices");
      WriteStrings(w, vgpus);
    }
    w.Key("conditions");
    WriteConditions(w, ready, o, now);
    w.EndObject();
  });
}

}  // namespace pcid::projection
