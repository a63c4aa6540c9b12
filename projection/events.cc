#include "projection/events.h"

#include <absl/strings/str_cat.h>
#include <absl/strings/str_format.h>
#include <absl/time/clock.h>
#include <absl/time/time.h>
#include <spdlog/spdlog.h>

#include "core/json_writer.h"
#include "core/status.h"
#include "projection/kube_client.h"
#include "projection/objects.h"
#include "projection/status_patch.h"
#include "projection/store.h"

namespace pcid::projection {
namespace {

constexpr size_t kMaxNote = 1024;

std::string EventsPath(const std::string& ns) {
  return absl::StrCat("/apis/events.k8s.io/v1/namespaces/", ns, "/events");
}

}  // namespace

EventSubject DeviceSubject(const Store& store, std::string kind, const std::string& name) {
  EventSubject s{"devices.harvesterhci.io/v1beta1", std::move(kind), name, "", ""};
  s.uid = store.Read([&](const Store::Objects& objects) {
    auto it = objects.find(name);
    return it == objects.end() ? std::string() : it->second.uid;
  });
  return s;
}

EventRecorder::EventRecorder(EventRecorderConfig config, const Clock& clock, spdlog::logger& log)
    : config_(std::move(config)), clock_(clock), log_(log) {}

bool EventRecorder::Record(KubeCaller& client, const EventSubject& subject, const std::string& type,
                           const std::string& reason, const std::string& action,
                           const std::string& note) {
  const Clock::time_point now = clock_.Now();
  const std::string text = note.size() > kMaxNote ? note.substr(0, kMaxNote) : note;
  Key key{absl::StrCat(subject.kind, "/", subject.ns, "/", subject.name), subject.uid, type, reason,
          text};
  auto it = series_.find(key);
  if (it != series_.end() && now - it->second.first_seen < config_.series_window) {
    Series& s = it->second;
    ++s.count;
    // The first repeat is written at once (the object shows a series); later ones wait for Flush.
    if (s.written_count != 1) return false;
    PatchSeries(client, s);
    return true;
  }
  const std::string ns = subject.ns.empty() ? "default" : subject.ns;
  // Unique per recorder: the subject's name and a time-and-sequence suffix, as client-go's.
  const std::string name = absl::StrFormat(
      "%s.%x%x", subject.name, static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())), ++sequence_);
  JsonWriter w;
  w.BeginObject().Key("apiVersion").String("events.k8s.io/v1").Key("kind").String("Event");
  w.Key("metadata").BeginObject().Key("name").String(name).Key("namespace").String(ns).EndObject();
  w.Key("eventTime").String(MicroTimeNow());
  w.Key("reportingController").String(config_.controller);
  w.Key("reportingInstance").String(config_.instance);
  w.Key("action").String(action).Key("reason").String(reason).Key("type").String(type);
  w.Key("note").String(text);
  w.Key("regarding").BeginObject().Key("apiVersion").String(subject.api_version);
  w.Key("kind").String(subject.kind).Key("name").String(subject.name);
  if (!subject.ns.empty()) w.Key("namespace").String(subject.ns);
  if (!subject.uid.empty()) w.Key("uid").String(subject.uid);
  w.EndObject().EndObject();
  ++writes_;
  absl::StatusOr<KubeResponse> r = client.Call("POST", EventsPath(ns), w.str());
  if (!r.ok() || (r->status != 201 && r->status != 200)) {
    log_.warn("event {} {} about {} {}: not recorded: {}", type, reason, subject.kind, subject.name,
              r.ok() ? absl::StrCat("HTTP ", r->status, ": ", StatusMessage(r->body))
                     : std::string(ToStd(r.status().message())));
    return true;
  }
  series_[key] = Series{ns, name, 1, 1, now};
  return true;
}

void EventRecorder::PatchSeries(KubeCaller& client, Series& s) {
  JsonWriter w;
  w.BeginObject().Key("series").BeginObject().Key("count").Int(s.count);
  w.Key("lastObservedTime").String(MicroTimeNow()).EndObject().EndObject();
  ++writes_;
  absl::StatusOr<KubeResponse> r =
      client.Call("PATCH", absl::StrCat(EventsPath(s.event_ns), "/", s.event_name), w.str(),
                  "application/merge-patch+json");
  if (!r.ok() || r->status != 200) {
    log_.warn("event {}/{}: series not updated: {}", s.event_ns, s.event_name,
              r.ok() ? absl::StrCat("HTTP ", r->status) : std::string(ToStd(r.status().message())));
    return;
  }
  s.written_count = s.count;
}

void EventRecorder::Flush(KubeCaller& client) {
  const Clock::time_point now = clock_.Now();
  if (now - last_flush_ < config_.flush_interval) return;
  last_flush_ = now;
  for (auto it = series_.begin(); it != series_.end();) {
    Series& s = it->second;
    if (s.count != s.written_count) PatchSeries(client, s);
    if (now - s.first_seen >= config_.series_window) {
      it = series_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace pcid::projection
