#include "projection/vf_claims.h"

#include <absl/strings/ascii.h>
#include <absl/strings/str_cat.h>

#include <algorithm>
#include <limits>

#include "core/json_writer.h"
#include "core/pci_address.h"
#include "projection/sriov_objects.h"

namespace pcid::projection {
namespace {

bool IsHexId(std::string_view s) {
  return s.size() == 4 &&
         std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isxdigit(c); });
}

void WriteStrings(JsonWriter& w, const std::vector<std::string>& list) {
  w.BeginArray();
  for (const std::string& s : list) w.String(s);
  w.EndArray();
}

}  // namespace

std::optional<std::string> VfClaimNode(const ObservedObject& claim) {
  auto it = claim.spec.find("nodeName");
  if (it == claim.spec.end()) return std::nullopt;
  return it->second;
}

std::variant<VfClaimSpec, SpecRefusal> CheckVfClaimSpec(const ObservedObject& claim) {
  for (const std::string& key : claim.spec_not_strings) {
    if (key != "count") return SpecRefusal{absl::StrCat("spec.", key, " must be a string")};
  }
  auto text = [&](const char* key) -> std::optional<std::string> {
    auto it = claim.spec.find(key);
    if (it == claim.spec.end()) return std::nullopt;
    return absl::AsciiStrToLower(it->second);
  };
  const auto pf = text("pfAddress"), vendor = text("vendorId"), device = text("deviceId");
  VfClaimSpec spec;
  if (pf) {
    if (vendor || device) {
      return SpecRefusal{"set exactly one of pfAddress or (vendorId and deviceId)"};
    }
    if (!IsPciAddress(*pf)) {
      return SpecRefusal{absl::StrCat("spec.pfAddress \"", pf->substr(0, 64),
                                      "\" is not a PCI address (DDDD:BB:DD.F)")};
    }
    spec.pf_address = *pf;
  } else {
    if (!vendor || !device) {
      return SpecRefusal{"set exactly one of pfAddress or (vendorId and deviceId)"};
    }
    if (!IsHexId(*vendor) || !IsHexId(*device)) {
      return SpecRefusal{"spec.vendorId and spec.deviceId must be 4 hex digits each"};
    }
    spec.vendor_id = *vendor;
    spec.device_id = *device;
  }
  if (claim.spec.count("count")) return SpecRefusal{"spec.count must be an integer"};
  auto count = claim.spec_ints.find("count");
  if (count == claim.spec_ints.end()) {
    return SpecRefusal{std::find(claim.spec_not_strings.begin(), claim.spec_not_strings.end(),
                                 "count") == claim.spec_not_strings.end()
                           ? "spec.count is required"
                           : "spec.count must be an integer"};
  }
  if (count->second < 1 || count->second > std::numeric_limits<unsigned>::max()) {
    return SpecRefusal{"spec.count must be at least 1"};
  }
  spec.count = static_cast<unsigned>(count->second);
  return spec;
}

std::map<std::string, unsigned> MaxVfsOf(const std::map<std::string, ObservedObject>& network,
                                         const std::string& node) {
  std::map<std::string, unsigned> out;
  for (const auto& [name, o] : network) {
    if (o.node_label != node || o.deleting) continue;
    auto node_it = o.spec.find("nodeName");
    auto address = o.spec.find("address");
    auto n = o.spec_ints.find("numVFs");
    if (node_it == o.spec.end() || node_it->second != node || address == o.spec.end() ||
        n == o.spec_ints.end() || n->second <= 0 ||
        n->second > std::numeric_limits<unsigned>::max()) {
      continue;
    }
    out[address->second] = static_cast<unsigned>(n->second);
  }
  return out;
}

VfClaimRequest VfClaimRequestOf(const std::string& name, const VfClaimSpec& spec, bool release,
                                std::map<std::string, unsigned> max_vfs) {
  VfClaimRequest r;
  r.name = name;
  r.release = release;
  r.pf_address = spec.pf_address;
  r.vendor_id = spec.vendor_id;
  r.device_id = spec.device_id;
  r.count = spec.count;
  r.max_vfs = std::move(max_vfs);
  return r;
}

std::optional<std::string> VfClaimStatusPatch(const ObservedObject& claim,
                                              std::vector<std::string> vfs,
                                              const std::string& resource_name,
                                              const Condition& ready, const std::string& node,
                                              std::string_view now) {
  std::sort(vfs.begin(), vfs.end());
  return StatusPatchIfChanged(claim, [&](JsonWriter& w) {
    w.BeginObject();
    w.Key("vfAddresses");
    WriteStrings(w, vfs);
    w.Key("pciDevices");
    WriteStrings(w, VfObjectNames(vfs, node));
    w.Key("resourceName").String(resource_name);
    w.Key("conditions");
    WriteConditions(w, ready, claim, now);
    w.EndObject();
  });
}

}  // namespace pcid::projection
