// File: dra/kubelet_plugin.h
//
// The driver's gRPC face to the kubelet (docs/dra-upstream.md §1-2): the DRA service
// (k8s.io.kubelet.pkg.apis.dra.v1 and v1beta1 DRAPlugin, one implementation: their messages share
// field numbers) on `<kubelet dir>/plugins/pcidevices.io/dra.sock`, then the plugin-registration
// service on `<kubelet dir>/plugins_registry/pcidevices.io-reg.sock` (GetInfo: type DRAPlugin,
// "v1.DRAPlugin" first; NotifyRegistrationStatus logged). The kubelet's plugin watcher finds the
// registration socket, also after its own restart; a socket someone deleted is created again by
// Check(). Owns both servers (RAII: sockets removed when destroyed).
#pragma once

#include <absl/status/statusor.h>

#include <memory>
#include <string>

namespace spdlog {
class logger;
}

namespace pcid::dra {

class Driver;

struct PluginPaths {
  std::string registry_dir;  // <kubelet dir>/plugins_registry
  std::string plugin_dir;    // <kubelet dir>/plugins/pcidevices.io
};

class KubeletPlugin {
 public:
  static absl::StatusOr<std::unique_ptr<KubeletPlugin>> Start(PluginPaths paths, Driver& driver,
                                                              spdlog::logger& log);
  ~KubeletPlugin();
  // The registration socket is there (re-created when it was removed). Owner thread.
  void Check();
  // The kubelet said it registered us (NotifyRegistrationStatus), and has not said otherwise
  // since. Any thread.
  bool registered() const;
  const std::string& registration_socket() const;

  struct State;

 private:
  explicit KubeletPlugin(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace pcid::dra
