#include "dra/checkpoint.h"

#include <absl/strings/str_cat.h>
#include <simdjson.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/json_writer.h"
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

absl::StatusOr<PreparedClaims> LoadCheckpoint(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return PreparedClaims{};
    return absl::InternalError(absl::StrCat(path, ": cannot read: ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return DecodeCheckpoint(text.str(), path);
}

absl::Status SaveCheckpoint(const std::string& path, const PreparedClaims& claims) {
  return WriteFileAtomically(path, EncodeCheckpoint(claims), 0600);
}

}  // namespace pcid::dra
