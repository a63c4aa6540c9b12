#include "cmd/daemon_command.h"

#include <iostream>
#include <optional>

#include "cmd/daemon.h"
#include "cmd/flags.h"
#include "cmd/logging.h"
#include "cmd/metrics_server.h"
#include "core/attribute.h"
#include "core/id_database.h"
#include "core/status.h"
#include "udev/monitor.h"

namespace pcid::cmd {
namespace {

constexpr char kUsage[] =
    "usage: pcidevices daemon --node-name N [--config FILE] [--sysfs-root DIR] [--dev-root DIR]\n"
    "         [--device-plugin-dir DIR] [--pod-resources-socket PATH] [--state-dir DIR]\n"
    "         [--kubeconfig FILE] [--uevent-source udev|kernel] [--vm-user-id N]\n"
    "         [--proc-root DIR] [--modprobe CMD] [--metrics-bind-address ADDR:PORT|0]\n"
    "         [--kubelet-dir DIR] [--cdi-dir DIR]\n";

}  // namespace

int RunDaemon(const std::vector<std::string>& args) {
  auto cmdline =
      ParseCommandLine("daemon", args,
                       {"node-name", "config", "sysfs-root", "dev-root", "device-plugin-dir",
                        "pod-resources-socket", "state-dir", "kubeconfig", "uevent-source",
                        "vm-user-id", "proc-root", "modprobe", "metrics-bind-address",
                        "kubelet-dir", "cdi-dir"},
                       {}, kUsage);
  if (!cmdline.flags) return cmdline.code;
  const ParsedFlags* flags = &*cmdline.flags;
  if (!flags->Has("node-name") || flags->Get("node-name", "").empty()) {
    std::cerr << "pcidevices daemon: --node-name is required\n" << kUsage;
    return 2;
  }
  auto log = MakeLogger("daemon");
  DaemonFlags f{flags->Get("node-name", ""), flags->Get("config", ""),
                flags->Get("device-plugin-dir", kDefaultDevicePluginDir),
                flags->Get("pod-resources-socket", kDefaultPodResourcesSocket),
                flags->Get("uevent-source", udev::DefaultUeventSource("/run"))};
  f.state_dir = flags->Get("state-dir", f.state_dir);
  f.modprobe = flags->Get("modprobe", f.modprobe);
  f.kubeconfig = flags->Get("kubeconfig", "");
  f.kubelet_dir = flags->Get("kubelet-dir", f.kubelet_dir);
  f.cdi_dir = flags->Get("cdi-dir", f.cdi_dir);
  f.metrics_bind_address = flags->Get("metrics-bind-address", f.metrics_bind_address);
  if (f.metrics_bind_address != "0") {
    if (auto bind = ParseBindAddress(f.metrics_bind_address); !bind.ok()) {
      std::cerr << "pcidevices daemon: " << bind.status().message() << "\n";
      return 2;
    }
  }
  auto roots = OpenHostRoots(*flags);
  if (!roots.ok()) {
    log->error("{}", ToStd(roots.status().message()));
    return 1;
  }
  if (flags->Has("vm-user-id")) {
    auto uid = ParseDecimalAttribute(flags->Get("vm-user-id", ""), 0, 65534);
    if (!uid.ok()) {
      std::cerr << "pcidevices daemon: --vm-user-id: " << uid.status().message() << "\n";
      return 2;
    }
    f.vm_uid = static_cast<unsigned>(*uid);
  }
  std::optional<IdDatabase> ids;
  if (auto db = IdDatabase::LoadFirst(DefaultPciIdsPaths()); db.ok()) {
    ids = *std::move(db);
  } else {
    log->warn("names unavailable: {}", ToStd(db.status().message()));
  }
  return RunDaemonLoop(std::move(f), *std::move(roots), std::move(ids));
}

}  // namespace pcid::cmd
