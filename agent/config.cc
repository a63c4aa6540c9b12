#include "agent/config.h"

#include <absl/strings/str_cat.h>
#include <simdjson.h>

#include <limits>

#include "core/attribute.h"
#include "core/mdev.h"
#include "core/status.h"
#include "core/text_file.h"

namespace pcid::agent {
namespace {

absl::StatusOr<uint16_t> Hex4(std::string_view text, const std::string& where) {
  if (text.size() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": want 4 hex digits, got \"", ToAbsl(text), "\""));
  }
  auto v = ParseHexAttribute(text, 4);
  if (!v.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", v.status().message()));
  return static_cast<uint16_t>(*v);
}

// `"sriov": [{"address": "0000:04:00.0", "numVFs": 2, "driversAutoprobe": false}]`.
absl::StatusOr<std::vector<SriovConfig>> ParseSriov(simdjson::dom::element value,
                                                    const std::string& origin) {
  simdjson::dom::array list;
  if (value.get(list)) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": \"sriov\" must be an array"));
  }
  std::vector<SriovConfig> out;
  size_t index = 0;
  for (simdjson::dom::element item : list) {
    const std::string where = absl::StrCat(origin, ": sriov[", index++, "]");
    simdjson::dom::object entry;
    if (item.get(entry)) return absl::InvalidArgumentError(absl::StrCat(where, ": want an object"));
    SriovConfig c;
    bool has_address = false, has_count = false;
    for (auto [k, v] : entry) {
      const std::string field = absl::StrCat(where, ".", std::string(k));
      if (k == "address") {
        std::string_view text;
        if (v.get(text)) return absl::InvalidArgumentError(absl::StrCat(field, ": want a string"));
        auto a = ParsePciAddress(text);
        if (!a.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(field, ": ", a.status().message()));
        }
        c.address = *a;
        has_address = true;
      } else if (k == "numVFs") {
        int64_t n = -1;
        if (v.get(n) || n < 0 || n > 65535) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, ": want an integer from 0 to 65535"));
        }
        c.num_vfs = static_cast<unsigned>(n);
        has_count = true;
      } else if (k == "driversAutoprobe") {
        bool b = false;
        if (v.get(b))
          return absl::InvalidArgumentError(absl::StrCat(field, ": want true or false"));
        c.drivers_autoprobe = b;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown key \"", std::string(k), "\""));
      }
    }
    if (!has_address || !has_count) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": want \"address\" and \"numVFs\""));
    }
    for (const SriovConfig& other : out) {
      if (other.address == c.address) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ", c.address.ToString(), " listed twice"));
      }
    }
    out.push_back(c);
  }
  return out;
}

constexpr int64_t kMaxMdevCount = 4096;

// `"mdevs": [{"parent": "0000:08:01.7", "type": "nvidia-746", "count": 1}]`. Parent and type end
// up in sysfs paths: only names that are one safe path component pass.
absl::StatusOr<std::vector<MdevConfig>> ParseMdevs(simdjson::dom::element value,
                                                   const std::string& origin) {
  simdjson::dom::array list;
  if (value.get(list)) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": \"mdevs\" must be an array"));
  }
  std::vector<MdevConfig> out;
  size_t index = 0;
  for (simdjson::dom::element item : list) {
    const std::string where = absl::StrCat(origin, ": mdevs[", index++, "]");
    simdjson::dom::object entry;
    if (item.get(entry)) return absl::InvalidArgumentError(absl::StrCat(where, ": want an object"));
    MdevConfig c;
    bool has_count = false;
    for (auto [k, v] : entry) {
      const std::string field = absl::StrCat(where, ".", std::string(k));
      if (k == "parent" || k == "type") {
        std::string_view text;
        if (v.get(text)) return absl::InvalidArgumentError(absl::StrCat(field, ": want a string"));
        std::string name(text);
        if (k == "parent") {
          if (auto a = ParsePciAddress(text); a.ok()) name = a->ToString();
        }
        if (!IsMdevComponent(name)) {
          return absl::InvalidArgumentError(absl::StrCat(
              field, ": \"", name.substr(0, 80), "\" is not a ",
              k == "parent" ? "PCI address or mdev parent name" : "type directory name",
              " (letters, digits and \"-_.:\", at most 64)"));
        }
        (k == "parent" ? c.parent : c.type) = name;
      } else if (k == "count") {
        int64_t n = -1;
        if (v.get(n) || n < 0 || n > kMaxMdevCount) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, ": want an integer from 0 to ", kMaxMdevCount));
        }
        c.count = static_cast<unsigned>(n);
        has_count = true;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown key \"", std::string(k), "\""));
      }
    }
    if (c.parent.empty() || c.type.empty() || !has_count) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": want \"parent\", \"type\" and \"count\""));
    }
    for (const MdevConfig& other : out) {
      if (other.parent == c.parent && other.type == c.type) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": type ", c.type, " of ", c.parent, " listed twice"));
      }
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

absl::StatusOr<DaemonConfig> ParseConfig(const std::string& json, const std::string& origin) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(json).get(root); err) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": not valid JSON: ", simdjson::error_message(err)));
  }
  simdjson::dom::object top;
  if (root.get(top)) return absl::InvalidArgumentError(absl::StrCat(origin, ": want an object"));
  DaemonConfig config;
  for (auto [key, value] : top) {
    if (key == "sriov") {
      PCID_ASSIGN_OR_RETURN(config.sriov, ParseSriov(value, origin));
      continue;
    }
    if (key == "mdevs") {
      PCID_ASSIGN_OR_RETURN(config.mdevs, ParseMdevs(value, origin));
      continue;
    }
    if (key != "enable" && key != "deny" && key != "dra") {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": unknown key \"", std::string(key), "\""));
    }
    simdjson::dom::array list;
    if (value.get(list)) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": \"", std::string(key), "\" must be an array"));
    }
    std::vector<DeviceSelector>& out = key == "enable" ? config.enable
                                       : key == "deny" ? config.deny
                                                       : config.dra;
    size_t index = 0;
    for (simdjson::dom::element item : list) {
      const std::string where = absl::StrCat(origin, ": ", std::string(key), "[", index++, "]");
      simdjson::dom::object sel;
      if (item.get(sel)) return absl::InvalidArgumentError(absl::StrCat(where, ": want an object"));
      DeviceSelector s;
      size_t fields = 0;
      for (auto [k, v] : sel) {
        std::string_view text;
        if (v.get(text)) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ".", std::string(k), ": want a string"));
        }
        const std::string field = absl::StrCat(where, ".", std::string(k));
        ++fields;
        if (k == "address") {
          auto a = ParsePciAddress(text);
          if (!a.ok())
            return absl::InvalidArgumentError(absl::StrCat(field, ": ", a.status().message()));
          s.address = *a;
        } else if (k == "vendor") {
          PCID_ASSIGN_OR_RETURN(s.vendor, Hex4(text, field));
        } else if (k == "device") {
          PCID_ASSIGN_OR_RETURN(s.device, Hex4(text, field));
        } else if (k == "class") {
          PCID_ASSIGN_OR_RETURN(s.class_id, Hex4(text, field));
        } else if (k == "driver") {
          if (text.empty() || text.find('/') != std::string_view::npos) {
            return absl::InvalidArgumentError(absl::StrCat(field, ": not a driver name"));
          }
          s.driver = std::string(text);
        } else {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": unknown key \"", std::string(k), "\""));
        }
      }
      if (fields == 0) {
        // An empty selector would match every device, the host's own disk and NIC included.
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": empty selector matches everything"));
      }
      out.push_back(s);
    }
  }
  return config;
}

absl::StatusOr<DaemonConfig> LoadConfig(const std::string& path) {
  PCID_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, std::numeric_limits<size_t>::max()));
  return ParseConfig(text, path);
}

}  // namespace pcid::agent
