#include "projection/objects.h"

#include <absl/strings/str_cat.h>
#include <simdjson.h>

#include "core/json_writer.h"
#include "core/status.h"
#include "projection/json_dom.h"

namespace pcid::projection {
namespace {

absl::Status Bad(std::string_view what, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(ToAbsl(what), ": ", ToAbsl(why)));
}

absl::StatusOr<std::map<std::string, std::string>> Flat(simdjson::dom::element e,
                                                        std::string_view what) {
  std::map<std::string, std::string> out;
  simdjson::dom::object obj;
  if (e.get(obj)) return Bad(what, "status is not an object");
  for (auto [k, v] : obj) AppendCanonical(v, out[std::string(k)]);
  return out;
}

absl::StatusOr<ObservedObject> FromElement(simdjson::dom::element e, bool name_required = true) {
  ObservedObject o;
  simdjson::dom::object meta;
  if (e["metadata"].get(meta)) return Bad("object", "no metadata");
  std::string_view name, rv;
  if ((meta["name"].get(name) || name.empty()) && name_required) {
    return Bad("object", "no metadata.name");
  }
  o.name = std::string(name);
  if (!meta["resourceVersion"].get(rv)) o.resource_version = std::string(rv);
  std::string_view ns, uid;
  if (!meta["namespace"].get(ns)) o.ns = std::string(ns);
  if (!meta["uid"].get(uid)) o.uid = std::string(uid);
  simdjson::dom::object labels;
  if (!meta["labels"].get(labels)) {
    for (auto [k, v] : labels) {
      std::string_view text;
      if (v.get(text)) continue;
      if (k == "nodename") {
        o.node_label = std::string(text);
      } else {
        o.labels.emplace(k, text);
      }
    }
  }
  simdjson::dom::array owners;
  if (!meta["ownerReferences"].get(owners)) {
    for (simdjson::dom::element owner : owners) {
      std::string_view kind, owner_name;
      if (!owner["kind"].get(kind) && !owner["name"].get(owner_name)) {
        o.owners.push_back({std::string(kind), std::string(owner_name)});
      }
    }
  }
  simdjson::dom::element ts;
  o.deleting = !meta["deletionTimestamp"].get(ts) && !ts.is_null();
  simdjson::dom::array finalizers;
  if (!meta["finalizers"].get(finalizers)) {
    for (simdjson::dom::element f : finalizers) {
      std::string_view text;
      if (!f.get(text)) o.finalizers.emplace_back(text);
    }
  }
  simdjson::dom::element status;
  if (!e["status"].get(status) && !status.is_null()) {
    PCID_ASSIGN_OR_RETURN(o.status, Flat(status, o.name));
  }
  simdjson::dom::object spec;
  if (!e["spec"].get(spec)) {
    for (auto [k, v] : spec) {
      std::string_view text;
      int64_t number = 0;
      bool flag = false;
      if (!v.get(text)) {
        o.spec.emplace(std::string(k), std::string(text));
        continue;
      }
      o.spec_not_strings.emplace_back(k);
      if (v.type() == simdjson::dom::element_type::INT64 && !v.get(number)) {
        o.spec_ints.emplace(std::string(k), number);
      } else if (!v.get(flag)) {
        o.spec_bools.emplace(std::string(k), flag);
      }
    }
  }
  for (const char* list : {"pciHostDevices", "usb", "mediatedDevices"}) {
    simdjson::dom::array entries;
    if (e["spec"]["configuration"]["permittedHostDevices"][list].get(entries)) continue;
    for (simdjson::dom::element entry : entries) {
      std::string_view resource;
      if (!entry["resourceName"].get(resource)) o.permitted_resources.emplace(resource);
    }
  }
  int64_t generation = 0;
  if (!e["spec"]["pool"]["generation"].get(generation)) o.pool_generation = generation;
  simdjson::dom::array slice_devices;
  if (o.pool_generation && !e["spec"]["devices"].get(slice_devices)) {
    for (simdjson::dom::element d : slice_devices) {
      std::string_view device;
      if (!d["name"].get(device)) o.slice_devices.emplace_back(device);
    }
  }
  simdjson::dom::object devices;
  if (!e["spec"]["template"]["spec"]["domain"]["devices"].get(devices)) {
    for (auto [list, out] : {std::pair{"hostDevices", &o.host_devices}, {"gpus", &o.gpus}}) {
      simdjson::dom::array entries;
      if (devices[list].get(entries)) continue;
      for (simdjson::dom::element entry : entries) {
        std::string_view entry_name, device_name;
        if (entry["name"].get(entry_name)) entry_name = {};
        if (entry["deviceName"].get(device_name)) device_name = {};
        out->push_back({std::string(entry_name), std::string(device_name)});
      }
    }
  }
  return o;
}

template <typename T, typename F>
absl::StatusOr<T> Parse(std::string_view json, std::string_view what, F&& f) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(json.data(), json.size()).get(root); err) {
    return Bad(what, absl::StrCat("not valid JSON: ", simdjson::error_message(err)));
  }
  return f(root);
}

}  // namespace

void AppendCanonical(simdjson::dom::element e, std::string& out) {
  simdjson::dom::object obj;
  simdjson::dom::array arr;
  if (!e.get(obj)) {
    std::map<std::string_view, simdjson::dom::element> sorted;
    for (auto [k, v] : obj) sorted.emplace(k, v);
    out += '{';
    bool first = true;
    for (const auto& [k, v] : sorted) {
      if (!first) out += ',';
      first = false;
      AppendJsonString(out, k);
      out += ':';
      AppendCanonical(v, out);
    }
    out += '}';
  } else if (!e.get(arr)) {
    out += '[';
    bool first = true;
    for (simdjson::dom::element v : arr) {
      if (!first) out += ',';
      first = false;
      AppendCanonical(v, out);
    }
    out += ']';
  } else {
    out += simdjson::minify(e);
  }
}

absl::Status WriteElement(JsonWriter& w, simdjson::dom::element e) {
  switch (e.type()) {
    case simdjson::dom::element_type::OBJECT:
      w.BeginObject();
      for (auto [k, v] : simdjson::dom::object(e)) {
        w.Key(k);
        PCID_RETURN_IF_ERROR(WriteElement(w, v));
      }
      w.EndObject();
      return absl::OkStatus();
    case simdjson::dom::element_type::ARRAY:
      w.BeginArray();
      for (simdjson::dom::element v : simdjson::dom::array(e)) {
        PCID_RETURN_IF_ERROR(WriteElement(w, v));
      }
      w.EndArray();
      return absl::OkStatus();
    case simdjson::dom::element_type::STRING:
      w.String(std::string_view(e));
      return absl::OkStatus();
    case simdjson::dom::element_type::INT64:
      w.Int(int64_t(e));
      return absl::OkStatus();
    case simdjson::dom::element_type::BOOL:
      w.Bool(bool(e));
      return absl::OkStatus();
    case simdjson::dom::element_type::NULL_VALUE:
      w.Null();
      return absl::OkStatus();
    case simdjson::dom::element_type::UINT64:
    case simdjson::dom::element_type::DOUBLE:
      break;
  }
  // JsonWriter writes no fractions and nothing past int64: refused rather than altered.
  return absl::InvalidArgumentError(
      absl::StrCat("number ", simdjson::minify(e), " cannot be written back (not an int64)"));
}

absl::StatusOr<StatusPart> StatusOfObject(std::string_view object_json) {
  return Parse<StatusPart>(object_json, "object",
                           [](simdjson::dom::element e) -> absl::StatusOr<StatusPart> {
                             simdjson::dom::element status;
                             if (e["status"].get(status)) return Bad("object", "no status");
                             StatusPart part;
                             PCID_ASSIGN_OR_RETURN(part.flat, Flat(status, "status"));
                             JsonWriter w;
                             w.BeginObject().Key("status");
                             PCID_RETURN_IF_ERROR(WriteElement(w, status));
                             w.EndObject();
                             part.patch = w.str();
                             return part;
                           });
}

std::optional<std::string> StatusString(const ObservedObject& o, std::string_view key) {
  auto it = o.status.find(std::string(key));
  if (it == o.status.end()) return std::nullopt;
  simdjson::dom::parser parser;
  std::string_view text;
  if (parser.parse(it->second).get(text)) return std::nullopt;
  return std::string(text);
}

std::string StoreKey(const ObservedObject& o) {
  return o.ns.empty() ? o.name : absl::StrCat(o.ns, "/", o.name);
}

absl::StatusOr<ObservedObject> DecodeObject(std::string_view json, bool name_required) {
  return Parse<ObservedObject>(json, "object", [name_required](simdjson::dom::element e) {
    return FromElement(e, name_required);
  });
}

absl::StatusOr<ObservedList> DecodeList(std::string_view json) {
  return Parse<ObservedList>(
      json, "list", [](simdjson::dom::element e) -> absl::StatusOr<ObservedList> {
        ObservedList list;
        std::string_view rv;
        if (e["metadata"]["resourceVersion"].get(rv))
          return Bad("list", "no metadata.resourceVersion");
        list.resource_version = std::string(rv);
        simdjson::dom::array items;
        simdjson::dom::element raw;
        if (!e["items"].get(raw) && raw.is_null())
          return list;  // "items": null, as Go marshals nil
        if (e["items"].get(items)) return Bad("list", "no items array");
        size_t i = 0;
        for (simdjson::dom::element item : items) {
          auto o = FromElement(item);
          if (o.ok()) {
            list.items.push_back(*std::move(o));
          } else {
            list.skipped.push_back(absl::StrCat("items[", i, "]: ", o.status().message()));
          }
          ++i;
        }
        return list;
      });
}

absl::StatusOr<WatchEvent> DecodeWatchEvent(std::string_view line) {
  return Parse<WatchEvent>(
      line, "watch event", [](simdjson::dom::element e) -> absl::StatusOr<WatchEvent> {
        WatchEvent ev;
        std::string_view type;
        if (e["type"].get(type)) return Bad("watch event", "no type");
        ev.type = std::string(type);
        simdjson::dom::element obj;
        if (e["object"].get(obj)) return Bad("watch event", "no object");
        if (ev.type == "ERROR") {
          int64_t code = 0;
          if (!obj["code"].get(code)) ev.code = static_cast<int>(code);
          return ev;
        }
        if (ev.type != "ADDED" && ev.type != "MODIFIED" && ev.type != "DELETED" &&
            ev.type != "BOOKMARK") {
          return Bad("watch event", absl::StrCat("unknown type \"", ev.type, "\""));
        }
        if (ev.type == "BOOKMARK") {
          std::string_view rv;
          if (obj["metadata"]["resourceVersion"].get(rv))
            return Bad("bookmark", "no resourceVersion");
          ev.object.resource_version = std::string(rv);
          return ev;
        }
        PCID_ASSIGN_OR_RETURN(ev.object, FromElement(obj));
        return ev;
      });
}

absl::StatusOr<std::map<std::string, std::string>> DecodeStatus(std::string_view status_json) {
  return Parse<std::map<std::string, std::string>>(
      status_json, "status", [](simdjson::dom::element e) { return Flat(e, "status"); });
}

std::string StatusMessage(std::string_view body) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string_view message;
  if (!parser.parse(body.data(), body.size()).get(root) && !root["message"].get(message)) {
    return std::string(message.substr(0, 300));
  }
  return std::string(body.substr(0, 200));
}

}  // namespace pcid::projection
