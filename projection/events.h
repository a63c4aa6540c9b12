// File: projection/events.h
//
// Kubernetes Events (events.k8s.io/v1) about our objects, so that `kubectl describe` says why a
// claim was refused or a device cleaned up. Repeats are aggregated as client-go's event
// recorder does: an event equal to one recorded in the last 6 minutes (same object, type,
// reason and note) is not written again; its `series` (count, lastObservedTime) is patched once
// on the first repeat and then at most every flush interval, so a retry loop never writes per
// retry. Writes go through the caller's KubeCaller; the recorder is used from one thread.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <tuple>

#include "core/clock.h"

namespace spdlog {
class logger;
}

namespace pcid::projection {

class KubeCaller;
class Store;

// The object an event is about.
struct EventSubject {
  std::string api_version;  // "devices.harvesterhci.io/v1beta1"
  std::string kind;         // "PCIDeviceClaim"
  std::string name;
  std::string ns;  // "" for cluster-scoped objects (their events go to "default")
  std::string uid;
};

struct EventRecorderConfig {
  std::string controller;                   // reportingController, "pcidevices.io/controller"
  std::string instance;                     // reportingInstance, the pod or node name
  std::chrono::seconds series_window{360};  // client-go's isomorphic-event window
  std::chrono::seconds flush_interval{30};  // how often pending series counts are written
};

// A devices.harvesterhci.io/v1beta1 object of `kind` named `name`, with its uid when `store` holds
// it (an Event about an object of the same name made again must not attach to the new one).
EventSubject DeviceSubject(const Store& store, std::string kind, const std::string& name);

class EventRecorder {
 public:
  EventRecorder(EventRecorderConfig config, const Clock& clock, spdlog::logger& log);

  // Records one occurrence. `type` "Normal" or "Warning"; `action` what was being done
  // ("Cleanup", "Enable"); `note` the human text (cut at 1 KiB, as the API server's limit).
  // Returns true when it wrote to the API server.
  bool Record(KubeCaller& client, const EventSubject& subject, const std::string& type,
              const std::string& reason, const std::string& action, const std::string& note);

  // Writes the series counts that changed since their last write, once the flush interval
  // passed; drops series older than the window. Call now and then (each loop turn).
  void Flush(KubeCaller& client);

  // Writes made so far (creates + patches), for tests and the metrics.
  uint64_t writes() const { return writes_; }

 private:
  using Key = std::tuple<std::string, std::string, std::string, std::string, std::string>;
  struct Series {
    std::string event_ns, event_name;
    int64_t count = 1;          // occurrences
    int64_t written_count = 1;  // as the server has it
    Clock::time_point first_seen;
  };
  void PatchSeries(KubeCaller& client, Series& s);

  const EventRecorderConfig config_;
  const Clock& clock_;
  spdlog::logger& log_;
  std::map<Key, Series> series_;
  Clock::time_point last_flush_{};
  uint64_t writes_ = 0;
  uint64_t sequence_ = 0;
};

}  // namespace pcid::projection
