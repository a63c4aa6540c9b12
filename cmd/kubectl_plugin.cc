#include "cmd/kubectl_plugin.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_split.h>

#include <cstdlib>
#include <iostream>
#include <map>

#include "cmd/doctor_command.h"
#include "cmd/flags.h"
#include "cmd/table.h"
#include "core/json_writer.h"
#include "projection/claims.h"
#include "projection/controllers.h"
#include "projection/kube_client.h"
#include "projection/kubeconfig.h"
#include "projection/mirror.h"
#include "projection/objects.h"

namespace pcid::cmd {
namespace {

constexpr char kUsage[] =
    "usage: kubectl pcidevices list [--node N] [--output table|json] [--kubeconfig FILE]\n"
    "       kubectl pcidevices doctor NAME [--output text|json] [--kubeconfig FILE]\n";

std::string KubeconfigPath(const ParsedFlags& flags) {
  if (flags.Has("kubeconfig")) return flags.Get("kubeconfig", "");
  if (const char* env = std::getenv("KUBECONFIG"); env && *env) {
    for (absl::string_view part : absl::StrSplit(env, ':', absl::SkipEmpty())) {
      return std::string(part);
    }
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home ? home : "", "/.kube/config");
}

// A list of `plural`, or an error line on stderr and nullopt.
std::optional<projection::ObservedList> List(projection::KubeClient& api, const std::string& path) {
  auto r = api.Call("GET", path);
  if (!r.ok()) {
    std::cerr << "kubectl pcidevices: " << r.status().message() << "\n";
    return std::nullopt;
  }
  if (r->status != 200) {
    std::cerr << "kubectl pcidevices: GET " << path << ": HTTP " << r->status << ": "
              << projection::StatusMessage(r->body) << "\n";
    return std::nullopt;
  }
  auto list = projection::DecodeList(r->body);
  if (!list.ok()) {
    std::cerr << "kubectl pcidevices: GET " << path << ": " << list.status().message() << "\n";
    return std::nullopt;
  }
  return *std::move(list);
}

int ListDevices(projection::KubeClient& api, const ParsedFlags& flags) {
  const std::string node = flags.Get("node", "");
  const std::string output = flags.Get("output", "table");
  if (output != "table" && output != "json") {
    std::cerr << "kubectl pcidevices list: --output table or json\n" << kUsage;
    return 2;
  }
  auto devices = List(api, absl::StrCat(projection::kDevicesApiPrefix, projection::kPciPlural,
                                        node.empty() ? "" : "?labelSelector=nodename%3D", node));
  if (!devices) return 1;
  auto claims = List(api, absl::StrCat(projection::kDevicesApiPrefix, projection::kClaimPlural));
  if (!claims) return 1;
  std::map<std::string, std::string> claimed;  // device name -> "yes" / "pending"
  for (const auto& c : claims->items) {
    auto enabled = c.status.find("passthroughEnabled");
    claimed[c.name] = enabled != c.status.end() && enabled->second == "true" ? "yes" : "pending";
  }
  auto field = [](const projection::ObservedObject& o, const char* key) {
    return projection::StatusString(o, key).value_or("");
  };
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : devices->items) {
    auto c = claimed.find(d.name);
    rows.push_back({d.name, field(d, "nodeName"), field(d, "address"),
                    field(d, "kernelDriverInUse"), field(d, "resourceName"),
                    c == claimed.end() ? "no" : c->second});
  }
  if (output == "json") {
    JsonWriter w;
    w.BeginArray();
    for (const auto& r : rows) {
      w.BeginObject().Key("name").String(r[0]).Key("node").String(r[1]).Key("address").String(r[2]);
      w.Key("driver").String(r[3]).Key("resourceName").String(r[4]).Key("claimed").String(r[5]);
      w.EndObject();
    }
    w.EndArray();
    std::cout << w.str() << "\n";
  } else {
    std::cout << FormatTable({"NAME", "NODE", "ADDRESS", "DRIVER", "RESOURCE", "CLAIMED"}, rows);
  }
  return 0;
}

}  // namespace

int RunKubectlPlugin(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    (args.empty() ? std::cerr : std::cout) << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string verb = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (verb == "doctor") {
    std::vector<std::string> doctor_args = rest;
    auto parsed = ParseFlags(rest, {"kubeconfig", "output"}, {});
    if (!parsed.ok()) {
      std::cerr << "kubectl pcidevices doctor: " << parsed.status().message() << "\n" << kUsage;
      return 2;
    }
    if (!parsed->Has("kubeconfig")) {
      doctor_args.insert(doctor_args.end(), {"--kubeconfig", KubeconfigPath(*parsed)});
    }
    doctor_args.push_back("--cluster-only");
    return RunDoctor(doctor_args);
  }
  if (verb != "list") {
    std::cerr << "kubectl pcidevices: unknown command \"" << verb << "\"\n" << kUsage;
    return 2;
  }
  auto parsed = ParseFlags(rest, {"kubeconfig", "output", "node"}, {});
  if (!parsed.ok() || !parsed->positional.empty()) {
    std::cerr << "kubectl pcidevices list: "
              << (parsed.ok() ? "no arguments expected" : std::string(parsed.status().message()))
              << "\n"
              << kUsage;
    return 2;
  }
  auto config = projection::LoadKubeconfig(KubeconfigPath(*parsed));
  if (!config.ok()) {
    std::cerr << "kubectl pcidevices: " << config.status().message() << "\n";
    return 1;
  }
  auto client = projection::KubeClient::Create(*config);
  if (!client.ok()) {
    std::cerr << "kubectl pcidevices: " << client.status().message() << "\n";
    return 1;
  }
  return ListDevices(**client, *parsed);
}

}  // namespace pcid::cmd
