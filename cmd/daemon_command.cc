#include "cmd/daemon_command.h"

#include <iostream>
#include <optional>

#include "cmd/daemon.h"
#include "cmd/flags.h"
#include "cmd/logging.h"
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
    "         [--proc-root DIR] [--modprobe CMD]\n";

}  // namespace

int RunDaemon(const std::vector<std::string>& args) {
  auto cmdline = ParseCommandLine(
      "daemon", args,
      {"node-name", "config", "sysfs-root", "dev-root", "device-plugin-dir", "pod-resources-socket",
       "state-dir", "kubeconfig", "uevent-source", "vm-user-id", "proc-root", "modprobe"},
      {}, kUsage);
  if (!cmdline.flags) return cmdline.code;
  const ParsedFlags* flags = &*cmdline.flags;
  if (!flags->Has("node-name") || flags->Get("node-name", "").empty()) {
    std::cerr << "pcidevices daemon: --node-name is required\n" << kUsage;
    return 2;
  }
  auto log = MakeLogger("daemon");
  DaemonFlags f{flags->Get("node-name", ""),
                flags->Get("config", ""),
                flags->Get("sysfs-root", "/sys"),
                flags->Get("dev-root", "/dev"),
                flags->Get("device-plugin-dir", "/var/lib/kubelet/device-plugins"),
                flags->Get("pod-resources-socket", "/var/lib/kubelet/pod-resources/kubelet.sock"),
                flags->Get("uevent-source", udev::DefaultUeventSource("/run"))};
  f.state_dir = flags->Get("state-dir", f.state_dir);
  f.proc_root = flags->Get("proc-root", f.proc_root);
  f.modprobe = flags->Get("modprobe", f.modprobe);
  f.kubeconfig = flags->Get("kubeconfig", "");
  auto sysfs = SysfsRoot::Open(f.sysfs_root);
  auto dev = SysfsRoot::Open(f.dev_root);
  auto proc = SysfsRoot::Open(f.proc_root);
  for (const auto* root : {&sysfs, &dev, &proc}) {
    if (!root->ok()) {
      log->error("{}", ToStd(root->status().message()));
      return 1;
    }
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
  return RunDaemonLoop(std::move(f), *std::move(sysfs), *std::move(dev), *std::move(proc),
                       std::move(ids));
}

}  // namespace pcid::cmd
