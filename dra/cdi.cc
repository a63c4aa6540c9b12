#include "dra/cdi.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/json_writer.h"
#include "core/unique_fd.h"
#include "core/write_all.h"

namespace pcid::dra {
namespace {

// 0.5.0: device names starting with a digit (a UID) and deviceNodes' hostPath. The lowest version
// that has both, so that older runtimes read it (docs/dra-upstream.md §4).
constexpr char kCdiVersion[] = "0.5.0";
constexpr char kMetadataApiVersion[] = "metadata.resource.k8s.io/v1alpha1";
constexpr char kMetadataRoot[] = "/var/run/kubernetes.io/dra-device-attributes";

std::string SpecPath(const std::string& cdi_dir, const std::string& kind, const std::string& uid) {
  return absl::StrCat(cdi_dir, "/", kDraDriverName, "-", kind, "_", uid, ".json");
}

std::string MetadataJson(const AllocatedClaim& claim, const std::string& request,
                         const std::vector<const HandedDevice*>& devices, const std::string& pool) {
  JsonWriter w;
  w.BeginObject()
      .Key("apiVersion")
      .String(kMetadataApiVersion)
      .Key("kind")
      .String("DeviceMetadata");
  w.Key("metadata").BeginObject().Key("name").String(claim.name).Key("namespace").String(claim.ns);
  w.Key("uid").String(claim.uid).Key("generation").Int(claim.generation).EndObject();
  if (!claim.pod_claim_name.empty()) w.Key("podClaimName").String(claim.pod_claim_name);
  w.Key("requests").BeginArray().BeginObject().Key("name").String(request);
  w.Key("devices").BeginArray();
  for (const HandedDevice* d : devices) {
    w.BeginObject().Key("driver").String(kDraDriverName).Key("pool").String(pool);
    w.Key("name").String(d->name);
    w.Key("attributes").BeginObject();
    if (!d->address.empty()) {
      w.Key("resource.kubernetes.io/pciBusID").BeginObject().Key("string").String(d->address);
      w.EndObject();
    }
    w.EndObject().EndObject();
  }
  w.EndArray().EndObject().EndArray().EndObject();
  return w.str() + "\n";
}

}  // namespace

ClaimFiles BuildClaimFiles(const AllocatedClaim& claim, const std::vector<HandedDevice>& handed,
                           const std::string& cdi_dir, const std::string& plugin_dir) {
  ClaimFiles out;
  auto find = [&](const std::string& name) -> const HandedDevice* {
    for (const HandedDevice& h : handed) {
      if (h.name == name) return &h;
    }
    return nullptr;
  };
  // Per request, in allocation order: its devices, and each one's KubeVirt value joined.
  std::vector<std::string> requests;
  std::map<std::string, std::vector<const HandedDevice*>> by_request;
  std::map<std::string, std::string> pool_of;
  for (const AllocatedDevice& a : claim.devices) {
    const HandedDevice* h = find(a.device);
    if (!h) continue;
    if (!by_request.count(a.request)) requests.push_back(a.request);
    by_request[a.request].push_back(h);
    pool_of[a.request] = a.pool;
  }
  struct Spec {
    JsonWriter w;
    bool any = false;
  };
  Spec pci, usb;
  for (Spec* s : {&pci, &usb}) {
    s->w.BeginObject().Key("cdiVersion").String(kCdiVersion).Key("kind");
    s->w.String(CdiKind(s == &usb));
    s->w.Key("devices").BeginArray();
  }
  for (const std::string& request : requests) {
    const auto& devices = by_request[request];
    std::map<std::string, std::vector<std::string>> values;  // env name -> values, this request
    for (const HandedDevice* d : devices) values[d->env_name].push_back(d->env_value);
    const std::string dir =
        absl::StrCat(ClaimMetadataDir(plugin_dir, claim.ns, claim.name), "/", request);
    const std::string host_file = dir + "/metadata.json";
    out.metadata.push_back({host_file, MetadataJson(claim, request, devices, pool_of[request])});
    const std::string container_file =
        claim.pod_claim_name.empty()
            ? absl::StrCat(kMetadataRoot, "/resourceclaims/", claim.name, "/", request, "/",
                           kDraDriverName, "-metadata.json")
            : absl::StrCat(kMetadataRoot, "/resourceclaimtemplates/", claim.pod_claim_name, "/",
                           request, "/", kDraDriverName, "-metadata.json");
    // A node once per request (/dev/vfio/vfio, a group's node shared by its functions): a
    // container gets a request's devices together.
    std::set<std::string> nodes_given;
    bool first = true;
    for (const HandedDevice* d : devices) {
      Spec& s = d->usb ? usb : pci;
      s.any = true;
      const std::string cdi_name = absl::StrCat(claim.uid, "-", d->name);
      out.cdi_ids[d->name].push_back(absl::StrCat(CdiKind(d->usb), "=", cdi_name));
      JsonWriter& w = s.w;
      w.BeginObject().Key("name").String(cdi_name).Key("containerEdits").BeginObject();
      if (!d->env_name.empty()) {
        w.Key("env").BeginArray();
        w.String(absl::StrCat(d->env_name, "=", absl::StrJoin(values[d->env_name], ",")));
        w.EndArray();
      }
      w.Key("deviceNodes").BeginArray();
      for (const DeviceNode& n : d->device_nodes) {
        if (!nodes_given.insert(n.path).second) continue;
        w.BeginObject().Key("path").String(n.path);
        if (n.host_path != n.path) w.Key("hostPath").String(n.host_path);
        w.Key("permissions").String("rw").EndObject();
      }
      w.EndArray();
      if (first) {
        w.Key("mounts").BeginArray().BeginObject();
        w.Key("hostPath").String(host_file).Key("containerPath").String(container_file);
        w.Key("options").BeginArray().String("ro").String("bind").EndArray();
        w.EndObject().EndArray();
        first = false;
      }
      w.EndObject().EndObject();
    }
  }
  for (Spec* s : {&pci, &usb}) {
    s->w.EndArray().EndObject();
    if (s->any) {
      out.specs.push_back(
          {SpecPath(cdi_dir, s == &pci ? "pci" : "usb", claim.uid), s->w.str() + "\n"});
    }
  }
  return out;
}

std::string CdiKind(bool usb) { return absl::StrCat(kDraDriverName, "/", usb ? "usb" : "pci"); }

std::vector<std::string> ClaimSpecPaths(const std::string& cdi_dir, const std::string& uid) {
  return {SpecPath(cdi_dir, "pci", uid), SpecPath(cdi_dir, "usb", uid)};
}

std::string ClaimMetadataDir(const std::string& plugin_dir, const std::string& ns,
                             const std::string& name) {
  return absl::StrCat(plugin_dir, "/dra-device-metadata/", ns, "_", name);
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& content, int mode,
                                 bool sync) {
  const std::filesystem::path target(path);
  std::error_code ec;
  std::filesystem::create_directories(target.parent_path(), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat(target.parent_path().string(), ": cannot create: ", ec.message()));
  }
  // A name runtimes do not read (only *.json and *.yaml are specs).
  const std::string tmp = absl::StrCat(path, ".", ::getpid(), ".tmp");
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd.valid()) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  }
  if (int err = WriteAll(fd.get(), content)) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(tmp, ": write: ", std::strerror(err)));
  }
  if (::fchmod(fd.get(), static_cast<mode_t>(mode)) != 0 || (sync && ::fsync(fd.get()) != 0) ||
      ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": cannot write: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace pcid::dra
