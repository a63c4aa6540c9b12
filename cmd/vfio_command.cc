#include "cmd/vfio_command.h"

#include <absl/strings/str_cat.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <iostream>

#include "agent/config.h"
#include "agent/device_actions.h"
#include "cmd/control_socket.h"
#include "cmd/flags.h"
#include "cmd/host_roots.h"
#include "cmd/logging.h"
#include "core/attribute.h"
#include "core/status.h"
#include "udev/discovery.h"

extern char** environ;

namespace pcid::cmd {

using agent::DaemonConfig;
using agent::DeviceContext;
using agent::DeviceRequest;
namespace {

constexpr char kUsage[] =
    "usage: pcidevices enable|disable ADDRESS... [--force] [--state-dir DIR] [--sysfs-root DIR]\n"
    "         [--dev-root DIR] [--proc-root DIR] [--config FILE] [--pod-resources-socket PATH]\n"
    "         [--modprobe CMD]\n"
    "       pcidevices vfs ADDRESS COUNT [the same flags]   (an SR-IOV PF's number of VFs)\n"
    "Acts through the running daemon when one answers on DIR/control.sock, directly otherwise.\n"
    "disable refuses a device a pod holds (kubelet PodResources) unless --force; vfs refuses a\n"
    "protected PF and one whose VFs a pod holds (any change recreates every VF).\n";

// Prints the daemon's (or our own) reply lines; returns the exit code.
int Report(const std::vector<std::string>& lines) {
  int rc = 0;
  for (const std::string& line : lines) {
    if (line.rfind("ok ", 0) == 0) {
      std::cout << line.substr(3) << "\n";
    } else {
      std::cerr << "pcidevices: " << (line.rfind("error ", 0) == 0 ? line.substr(6) : line) << "\n";
      rc = 1;
    }
  }
  return rc;
}

}  // namespace

absl::Status LoadVfioModule(const std::string& modprobe) {
  std::string arg0 = modprobe, arg1 = "vfio-pci";
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  pid_t pid;
  if (int err = ::posix_spawnp(&pid, modprobe.c_str(), nullptr, nullptr, argv, environ); err) {
    return ErrnoStatus(err, absl::StrCat("run ", modprobe, " vfio-pci"));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(modprobe, " vfio-pci failed (status ", status, ")"));
  }
  return absl::OkStatus();
}

int RunDeviceCommand(const std::string& verb, const std::vector<std::string>& args,
                     const TestHooks& hooks) {
  auto parsed = ParseFlags(args,
                           {"state-dir", "sysfs-root", "dev-root", "proc-root", "config",
                            "pod-resources-socket", "modprobe"},
                           {"force", "help"});
  if (!parsed.ok()) {
    std::cerr << "pcidevices " << verb << ": " << parsed.status().message() << "\n" << kUsage;
    return 2;
  }
  if (parsed->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  DeviceRequest req{verb, parsed->positional, parsed->Has("force"), 0};
  if (verb == "vfs") {
    if (req.addresses.size() != 2) {
      std::cerr << "pcidevices vfs: want ADDRESS COUNT\n" << kUsage;
      return 2;
    }
    auto count = agent::ParseVfCount(req.addresses[1]);
    if (!count.ok()) {
      std::cerr << "pcidevices vfs: " << count.status().message() << "\n";
      return 2;
    }
    req.vf_count = *count;
    req.addresses.pop_back();
  }
  if (req.addresses.empty()) {
    std::cerr << "pcidevices " << verb << ": no address given\n" << kUsage;
    return 2;
  }
  // Validated here too: the request travels as one line, and nothing malformed may reach a path.
  for (const std::string& a : req.addresses) {
    if (!IsPciAddress(a)) {
      std::cerr << "pcidevices " << verb << ": \"" << a
                << "\": not a PCI address (want DDDD:BB:DD.F, lower-case hex, e.g. "
                   "0000:3b:00.0)\n";
      return 2;
    }
  }
  const std::string state_dir = parsed->Get("state-dir", kDefaultStateDir);
  auto reply = CallDaemon(ControlSocketPath(state_dir), agent::FormatDeviceRequest(req), 120000);
  if (reply.ok()) return Report(*reply);
  if (!absl::IsUnavailable(reply.status())) {
    std::cerr << "pcidevices " << verb << ": daemon: " << reply.status().message() << "\n";
    return 1;
  }

  // No daemon: act here, holding the state lock.
  auto log = MakeLogger(verb);
  auto store = vfio::StateStore::Open(state_dir);
  if (!store.ok()) {
    std::cerr << "pcidevices " << verb << ": " << store.status().message() << "\n";
    return 1;
  }
  auto roots = OpenHostRoots(*parsed);
  if (!roots.ok()) {
    std::cerr << "pcidevices " << verb << ": " << roots.status().message() << "\n";
    return 1;
  }
  const SysfsRoot& sysfs = roots->sysfs;
  const SysfsRoot& proc = roots->proc;
  // The deny list applies here too: the daemon's config (where the DaemonSet mounts it) unless
  // --config names another. Without one, only the built-in protection applies, and the daemon's
  // next start gives back anything its deny list covers.
  DaemonConfig config;
  std::string config_path = parsed->Get("config", "");
  if (config_path.empty() && ::access(kDefaultConfigPath, F_OK) == 0)
    config_path = kDefaultConfigPath;
  if (!config_path.empty()) {
    auto c = agent::LoadConfig(config_path);
    if (!c.ok()) {
      std::cerr << "pcidevices " << verb << ": " << c.status().message() << "\n";
      return 1;
    }
    config = *std::move(c);
  } else if (verb == "enable") {
    log->warn("no --config and no {}: no deny list applies", kDefaultConfigPath);
  }
  auto devices = udev::DiscoverPciDevices(sysfs, nullptr, *log);
  if (!devices.ok()) {
    std::cerr << "pcidevices " << verb << ": " << devices.status().message() << "\n";
    return 1;
  }
  const std::string modprobe = parsed->Get("modprobe", "modprobe");
  vfio::Node node{sysfs,
                  roots->dev,
                  [modprobe] { return LoadVfioModule(modprobe); },
                  [&sysfs](std::string_view rel, std::string_view value) {
                    return sysfs.WriteFile(rel, value);
                  },
                  hooks.after_step,
                  *log,
                  vfio::kProbeWait,
                  &proc};
  const std::string pod_resources = parsed->Get("pod-resources-socket", kDefaultPodResourcesSocket);
  DeviceContext ctx{node, *store, *devices,
                    [&] { return vfio::FindProtectedDevices(sysfs, proc, *devices, config.deny); },
                    [&](const std::string& address) -> absl::StatusOr<std::string> {
                      PCID_ASSIGN_OR_RETURN(auto holders, agent::ListHoldersNow(pod_resources));
                      auto it = holders.find(address);
                      return it == holders.end() ? std::string() : it->second;
                    }};
  return Report(agent::RunDeviceRequest(ctx, req));
}

}  // namespace pcid::cmd
