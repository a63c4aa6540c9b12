// File: unit/projection/fake_server.h
//
// For the controllers' tests: a fake API server that keeps what the controllers write (each write
// comes back into the store as its watch event would), and a silent logger.
#pragma once

#include <absl/strings/str_cat.h>
#include <absl/strings/str_split.h>
#include <simdjson.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <boost/test/unit_test.hpp>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "projection/controllers.h"
#include "projection/kube_client.h"
#include "projection/store.h"

namespace pcid::projection::testing {

inline spdlog::logger& Log() {
  static auto log = std::make_shared<spdlog::logger>(
      "controllers-test", std::make_shared<spdlog::sinks::null_sink_mt>());
  return *log;
}

inline WatchEvent Event(const std::string& type, ObservedObject o) {
  WatchEvent ev;
  ev.type = type;
  ev.object = std::move(o);
  return ev;
}

// Keeps what the controllers write in their stores, as the watch would bring it back; answers
// carry no object (so only that "watch" fills the stores).
struct FakeServer final : KubeCaller {
  struct Request {
    std::string method, path, body;
  };
  std::vector<Request> calls;
  std::map<std::string, Store*> stores;  // plural -> store
  int64_t rv = 100;
  bool down = false;

  std::string NextRv() { return std::to_string(++rv); }

  // A user's (or another writer's) change to an object, as its watch event.
  void Modify(const std::string& plural, const std::string& name,
              const std::function<void(ObservedObject&)>& f) {
    ObservedObject o = stores.at(plural)->Snapshot().at(name);
    f(o);
    o.resource_version = NextRv();
    stores.at(plural)->Apply(Event("MODIFIED", o));
  }
  void Remove(const std::string& plural, const std::string& name) {
    ObservedObject o = stores.at(plural)->Snapshot().at(name);
    o.resource_version = NextRv();
    stores.at(plural)->Apply(Event("DELETED", o));
  }
  void Add(const std::string& plural, ObservedObject o) {
    o.resource_version = NextRv();
    stores.at(plural)->Apply(Event("ADDED", o));
  }

  absl::StatusOr<KubeResponse> Call(std::string_view method, const std::string& path,
                                    const std::string& body, const std::string&) override {
    calls.push_back({std::string(method), path, body});
    if (down) return absl::UnavailableError("connection refused");
    std::vector<std::string> parts =
        absl::StrSplit(path.substr(std::string(kDevicesApiPrefix).size()), '/');
    if (method == "POST") {
      Add(parts[0], *DecodeObject(body));
    } else if (method == "DELETE") {
      Remove(parts[0], parts[1]);
    } else if (parts.size() == 3) {  // PATCH of /status
      absl::StatusOr<StatusPart> part = StatusOfObject(body);
      BOOST_REQUIRE(part.ok());
      Modify(parts[0], parts[1], [&](ObservedObject& o) {
        for (const auto& [k, v] : part->flat) o.status[k] = v;
      });
    } else {  // PATCH of metadata.finalizers
      simdjson::dom::parser parser;
      simdjson::dom::array list;
      BOOST_REQUIRE(!parser.parse(body)["metadata"]["finalizers"].get(list));
      Modify(parts[0], parts[1], [&](ObservedObject& o) {
        o.finalizers.clear();
        for (simdjson::dom::element f : list) o.finalizers.emplace_back(std::string_view(f));
      });
    }
    return KubeResponse{200, "{}"};
  }
  using KubeCaller::Call;

  std::vector<Request> Take() {
    std::vector<Request> out;
    out.swap(calls);
    return out;
  }
};

}  // namespace pcid::projection::testing
