#include "dra/driver.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_join.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <future>
#include <set>

#include "core/status.h"
#include "dra/cdi.h"
#include "projection/kube_client.h"
#include "projection/objects.h"

namespace pcid::dra {
namespace {

std::string Who(const ClaimRef& ref) {
  return absl::StrCat("claim ", ref.ns, "/", ref.name, " (uid ", ref.uid, ")");
}

std::string ClaimsDir(const DriverOptions& o) { return o.plugin_dir + "/claims"; }

// Waits for an answer posted from another thread, at most `timeout`, or until `stopping`; the
// sender may answer after the wait gave up (the promise is shared).
template <typename T>
std::optional<T> Await(const std::function<void(std::function<void(T)>)>& ask,
                       std::chrono::milliseconds timeout, const std::atomic<bool>& stopping) {
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> got = promise->get_future();
  ask([promise](T answer) { promise->set_value(std::move(answer)); });
  const auto end = std::chrono::steady_clock::now() + timeout;
  // In slices, so that a stopping agent does not wait for a bind the kernel never answers.
  while (got.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
    if (stopping || std::chrono::steady_clock::now() >= end) return std::nullopt;
  }
  return got.get();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Driver>> Driver::Create(DriverOptions options,
                                                       std::unique_ptr<projection::KubeCaller> api,
                                                       DeviceOwner owner, spdlog::logger& log) {
  PCID_ASSIGN_OR_RETURN(PreparedClaims prepared, LoadCheckpoint(ClaimsDir(options)));
  return std::unique_ptr<Driver>(
      new Driver(std::move(options), std::move(api), std::move(owner), log, std::move(prepared)));
}

Driver::Driver(DriverOptions options, std::unique_ptr<projection::KubeCaller> api,
               DeviceOwner owner, spdlog::logger& log, PreparedClaims prepared)
    : options_(std::move(options)), owner_(std::move(owner)), log_(log) {
  MutexLock lock(&mu_);
  api_ = std::move(api);
  prepared_ = std::move(prepared);
}

Driver::~Driver() = default;

void Driver::Stop() { stopping_ = true; }

std::map<std::string, std::vector<std::string>> Driver::PreparedDevices() const {
  MutexLock lock(&mu_);
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [uid, c] : prepared_) {
    auto& devices = out[uid];
    for (const PreparedDevice& d : c.devices) devices.push_back(d.device);
  }
  return out;
}

std::map<std::string, ClaimAnswer> Driver::Prepare(const std::vector<ClaimRef>& claims) {
  MutexLock lock(&mu_);
  std::map<std::string, ClaimAnswer> out;
  for (const ClaimRef& ref : claims) {
    if (out.count(ref.uid)) continue;  // named twice in one request: answered once
    out[ref.uid] = PrepareOne(ref);
  }
  return out;
}

std::map<std::string, std::string> Driver::Unprepare(const std::vector<ClaimRef>& claims) {
  MutexLock lock(&mu_);
  std::map<std::string, std::string> out;
  for (const ClaimRef& ref : claims) {
    if (out.count(ref.uid)) continue;
    out[ref.uid] = UnprepareOne(ref);
  }
  return out;
}

absl::StatusOr<AllocatedClaim> Driver::ReadClaim(const ClaimRef& ref) {
  const std::string path =
      absl::StrCat("/apis/resource.k8s.io/v1/namespaces/", ref.ns, "/resourceclaims/", ref.name);
  auto res = api_->Call("GET", path);
  if (!res.ok()) {
    return absl::UnavailableError(
        absl::StrCat(Who(ref), ": cannot read it from the API server: ", res.status().message()));
  }
  if (res->status == 404) {
    return absl::NotFoundError(absl::StrCat(Who(ref), ": not found on the API server"));
  }
  if (res->status != 200) {
    return absl::UnavailableError(absl::StrCat(Who(ref), ": GET ", path, ": HTTP ", res->status,
                                               ": ", projection::StatusMessage(res->body)));
  }
  auto claim = DecodeAllocatedClaim(res->body, kDraDriverName);
  if (!claim.ok()) {
    return absl::Status(claim.status().code(),
                        absl::StrCat(Who(ref), ": ", claim.status().message()));
  }
  if (claim->uid != ref.uid) {
    return absl::FailedPreconditionError(absl::StrCat(Who(ref), ": the API server's claim has uid ",
                                                      claim->uid,
                                                      " (it was deleted and created again)"));
  }
  return claim;
}

ClaimAnswer Driver::PrepareOne(const ClaimRef& ref) {
  if (absl::Status st = CheckClaimRef(ref); !st.ok()) return {std::string(st.message()), {}};
  if (auto it = prepared_.find(ref.uid); it != prepared_.end()) {
    // Prepared before (a retry, a kubelet restart), unless its files are gone: the CDI directory
    // is a tmpfs, the checkpoint is not, and after a reboot the kubelet prepares again.
    if (FilesPresent(it->second)) return {"", it->second.devices};
    log_.warn("{}: prepared before, but its CDI spec is gone (a reboot?): preparing again",
              Who(ref));
    prepared_.erase(it);
  }
  auto claim = ReadClaim(ref);
  if (!claim.ok()) {
    log_.warn("prepare: {}", ToStd(claim.status().message()));
    return {std::string(claim.status().message()), {}};
  }
  PrepareRequest request{ref.uid, {}};
  std::set<std::string> seen;
  for (const AllocatedDevice& d : claim->devices) {
    if (d.pool != options_.node) {
      return {absl::StrCat(Who(ref), ": device ", d.device, " is of pool ", d.pool,
                           ", not of this node's pool ", options_.node),
              {}};
    }
    if (!seen.insert(d.device).second) {
      return {absl::StrCat(Who(ref), ": device ", d.device, " is allocated twice"), {}};
    }
    request.devices.push_back(d.device);
  }
  PreparedClaim prepared{ref.uid, ref.ns, ref.name, {}};
  if (!request.devices.empty()) {
    auto answer = AskPrepare(request);
    if (!answer.ok()) return {absl::StrCat(Who(ref), ": ", answer.status().message()), {}};
    if (!answer->error.empty()) {
      log_.warn("prepare {}: {}", Who(ref), answer->error);
      return {absl::StrCat(Who(ref), ": ", answer->error), {}};
    }
    ClaimFiles files =
        BuildClaimFiles(*claim, answer->devices, options_.cdi_dir, options_.plugin_dir);
    absl::Status written;
    for (const auto* list : {&files.metadata, &files.specs}) {
      for (const ClaimFile& f : *list) {
        // Not synced: a reboot empties the CDI directory anyway (see FilesPresent).
        if (written.ok()) written = WriteFileAtomically(f.path, f.content, 0644, /*sync=*/false);
      }
    }
    for (const AllocatedDevice& d : claim->devices) {
      prepared.devices.push_back({d.request, d.pool, d.device, files.cdi_ids[d.device]});
    }
    if (written.ok()) {
      written = SaveClaim(ClaimsDir(options_), prepared);
      if (written.ok()) prepared_[ref.uid] = prepared;
    }
    if (!written.ok()) {
      // Nothing left behind: the devices back, the files gone.
      RemoveFiles(ref.uid, ref.ns, ref.name);
      if (std::string undo = AskUnprepare({ref.uid, request.devices}); !undo.empty()) {
        log_.error("{}: giving the devices back after a failed prepare: {}", Who(ref), undo);
      }
      return {absl::StrCat(Who(ref), ": ", written.message()), {}};
    }
  } else {
    if (absl::Status st = SaveClaim(ClaimsDir(options_), prepared); !st.ok()) {
      return {absl::StrCat(Who(ref), ": ", st.message()), {}};
    }
    prepared_[ref.uid] = prepared;
  }
  log_.info("prepared {}: {}", Who(ref), absl::StrJoin(request.devices, ", "));
  return {"", prepared.devices};
}

std::string Driver::UnprepareOne(const ClaimRef& ref) {
  // Only the uid is used: it is what the checkpoint is keyed by (the claim may be gone).
  auto it = prepared_.find(ref.uid);
  if (it == prepared_.end()) return "";  // never prepared here, or unprepared already
  const PreparedClaim claim = it->second;
  std::vector<std::string> devices;
  for (const PreparedDevice& d : claim.devices) devices.push_back(d.device);
  if (!devices.empty()) {
    if (std::string error = AskUnprepare({claim.uid, devices}); !error.empty()) {
      log_.warn("unprepare {}: {}", Who(ref), error);
      return absl::StrCat(Who(ref), ": ", error);
    }
  }
  RemoveFiles(claim.uid, claim.ns, claim.name);
  prepared_.erase(it);
  if (absl::Status st = RemoveClaim(ClaimsDir(options_), claim.uid); !st.ok()) {
    // The devices are back; a later unprepare of this claim finds nothing to do.
    log_.error("unprepare {}: {}", Who(ref), ToStd(st.message()));
    return absl::StrCat(Who(ref), ": ", st.message());
  }
  log_.info("unprepared {}", Who(ref));
  return "";
}

bool Driver::FilesPresent(const PreparedClaim& claim) const {
  const std::vector<std::string> specs = ClaimSpecPaths(options_.cdi_dir, claim.uid);
  for (const PreparedDevice& d : claim.devices) {
    for (const std::string& id : d.cdi_ids) {
      const bool usb = id.rfind(CdiKind(true) + "=", 0) == 0;
      if (::access((usb ? specs[1] : specs[0]).c_str(), F_OK) != 0) return false;
    }
  }
  return true;
}

void Driver::RemoveFiles(const std::string& uid, const std::string& ns, const std::string& name) {
  for (const std::string& path : ClaimSpecPaths(options_.cdi_dir, uid)) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      log_.error("claim {}: cannot remove {}: {}", uid, path, std::strerror(errno));
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(ClaimMetadataDir(options_.plugin_dir, ns, name), ec);
  if (ec) log_.error("claim {}: cannot remove its metadata: {}", uid, ec.message());
}

absl::StatusOr<PrepareAnswer> Driver::AskPrepare(PrepareRequest request) {
  auto answer = Await<PrepareAnswer>(
      [&](std::function<void(PrepareAnswer)> done) {
        owner_.prepare(std::move(request), std::move(done));
      },
      options_.owner_timeout, stopping_);
  if (!answer) {
    if (stopping_) return absl::UnavailableError("the node agent is stopping");
    return absl::DeadlineExceededError(
        absl::StrCat("the node agent did not hand the devices over within ",
                     options_.owner_timeout.count(), " ms (a bind still in progress?)"));
  }
  return *std::move(answer);
}

std::string Driver::AskUnprepare(UnprepareRequest request) {
  auto answer = Await<std::string>(
      [&](std::function<void(std::string)> done) {
        owner_.unprepare(std::move(request), std::move(done));
      },
      options_.owner_timeout, stopping_);
  if (!answer) {
    if (stopping_) return "the node agent is stopping";
    return absl::StrCat("the node agent did not give the devices back within ",
                        options_.owner_timeout.count(), " ms");
  }
  return *answer;
}

}  // namespace pcid::dra
