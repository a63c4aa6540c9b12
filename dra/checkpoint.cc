#include "dra/checkpoint.h"

#include <absl/strings/str_cat.h>
#include <simdjson.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/json_writer.h"
#include "core/status.h"
#include "core/text_file.h"
#include "dra/cdi.h"

namespace pcid::dra {
namespace {

constexpr char kApiVersion[] = "checkpoint.pcidevices.io/v1";

}  // namespace

std::string EncodeCheckpoint(const PreparedClaims& claims) {
  JsonWriter w(1);
  w.BeginObject().Key("apiVersion").String(kApiVersion).Key("kind").String("Checkpoint");
  w.Key("preparedClaims").BeginArray();
  for (const auto& [uid, c] : claims) {
    w.BeginObject().Key("uid").String(uid).Key("namespace").String(c.ns).Key("name").String(c.name);
    w.Key("devices").BeginArray();
    for (const PreparedDevice& d : c.devices) {
      w.BeginObject().Key("request").String(d.request).Key("pool").String(d.pool);
      w.Key("device").String(d.device).Key("cdiDeviceIds").BeginArray();
      for (const std::string& id : d.cdi_ids) w.String(id);
      w.EndArray().EndObject();
    }
    w.EndArray().EndObject();
  }
  w.EndArray().EndObject();
  return w.str() + "\n";
}

absl::StatusOr<PreparedClaims> DecodeCheckpoint(std::string_view json, const std::string& origin) {
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(origin, ": ", why));
  };
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(json.data(), json.size()).get(root); err) {
    return bad(absl::StrCat("not valid JSON: ", simdjson::error_message(err)));
  }
  std::string_view text;
  if (root["apiVersion"].get(text) || text != kApiVersion) {
    return bad(absl::StrCat("apiVersion is not ", kApiVersion));
  }
  simdjson::dom::array claims;
  if (root["preparedClaims"].get(claims)) return bad("no preparedClaims array");
  PreparedClaims out;
  size_t i = 0;
  for (simdjson::dom::element c : claims) {
    const std::string where = absl::StrCat("preparedClaims[", i++, "]");
    PreparedClaim claim;
    std::string_view uid, ns, name;
    if (c["uid"].get(uid) || c["namespace"].get(ns) || c["name"].get(name) || uid.empty()) {
      return bad(absl::StrCat(where, ": uid, namespace and name must be strings"));
    }
    claim.uid = uid;
    claim.ns = ns;
    claim.name = name;
    simdjson::dom::array devices;
    if (c["devices"].get(devices)) return bad(absl::StrCat(where, ": no devices array"));
    for (simdjson::dom::element d : devices) {
      PreparedDevice dev;
      std::string_view request, pool, device;
      simdjson::dom::array ids;
      if (d["request"].get(request) || d["pool"].get(pool) || d["device"].get(device) ||
          d["cdiDeviceIds"].get(ids)) {
        return bad(absl::StrCat(where, ": a device lacks request, pool, device or cdiDeviceIds"));
      }
      dev.request = request;
      dev.pool = pool;
      dev.device = device;
      for (simdjson::dom::element id : ids) {
        if (id.get(text)) return bad(absl::StrCat(where, ": a CDI device ID is not a string"));
        dev.cdi_ids.emplace_back(text);
      }
      claim.devices.push_back(std::move(dev));
    }
    if (!out.emplace(claim.uid, claim).second) {
      return bad(absl::StrCat(where, ": claim ", claim.uid, " twice"));
    }
  }
  return out;
}

namespace {

// A claim file holds a few devices; the single file of before, every claim of the node.
constexpr size_t kMaxCheckpointFile = 16 << 20;

std::string ClaimPath(const std::string& dir, const std::string& uid) {
  return absl::StrCat(dir, "/", uid, ".json");
}

// The single file of the layout before (every claim in `<dir>/../checkpoint.json`): its claims
// moved to their own files, then it is removed.
absl::Status SplitSingleFile(const std::string& dir, PreparedClaims& out) {
  const std::string single = std::filesystem::path(dir).parent_path() / "checkpoint.json";
  auto text = ReadTextFile(single, kMaxCheckpointFile);
  if (absl::IsNotFound(text.status())) return absl::OkStatus();
  if (!text.ok()) return text.status();
  PCID_ASSIGN_OR_RETURN(PreparedClaims claims, DecodeCheckpoint(*text, single));
  for (const auto& [uid, claim] : claims) {
    PCID_RETURN_IF_ERROR(SaveClaim(dir, claim));
    out[uid] = claim;
  }
  if (::unlink(single.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(single, ": cannot remove: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PreparedClaims> LoadCheckpoint(const std::string& dir) {
  PreparedClaims out;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) ec.clear();  // no claim prepared yet
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot list: ", ec.message()));
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string path = it->path().string();
    const std::string file = it->path().filename().string();
    if (file.ends_with(".tmp")) {  // a write a crash cut short: its claim was never answered
      ::unlink(path.c_str());
      continue;
    }
    if (!file.ends_with(".json")) continue;
    const std::string uid = file.substr(0, file.size() - 5);
    PCID_ASSIGN_OR_RETURN(const std::string text, ReadTextFile(path, kMaxCheckpointFile));
    PCID_ASSIGN_OR_RETURN(PreparedClaims one, DecodeCheckpoint(text, path));
    if (one.size() != 1) {
      return absl::DataLossError(
          absl::StrCat(path, ": holds ", one.size(), " claims, not the one its name says"));
    }
    if (!one.count(uid)) {
      return absl::DataLossError(absl::StrCat(path, ": holds claim ", one.begin()->first,
                                              ", not claim ", uid, " as its name says"));
    }
    out[uid] = std::move(one.at(uid));
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot list: ", ec.message()));
  PCID_RETURN_IF_ERROR(SplitSingleFile(dir, out));
  return out;
}

absl::Status SaveClaim(const std::string& dir, const PreparedClaim& claim) {
  return WriteFileAtomically(ClaimPath(dir, claim.uid), EncodeCheckpoint({{claim.uid, claim}}),
                             0600);
}

absl::Status RemoveClaim(const std::string& dir, const std::string& uid) {
  const std::string path = ClaimPath(dir, uid);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::InternalError(absl::StrCat(path, ": cannot remove: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace pcid::dra
