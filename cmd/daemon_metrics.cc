#include "cmd/daemon_metrics.h"

#include "projection/projection.h"

namespace pcid::cmd {

using metrics::Type;

DaemonMetrics::DaemonMetrics()
    : loop_handler(registry.AddHistogram(
          "pcidevices_owner_loop_handler_duration_seconds",
          "Time one handler held the owner loop (uevents, plugin directory, posted work, timers).",
          {"handler"})),
      uevents(
          registry.AddCounter("pcidevices_uevents_total", "Kernel uevents received (PCI and USB).")
              .With()),
      kubelet_restarts(registry
                           .AddCounter("pcidevices_kubelet_restarts_total",
                                       "Kubelet starts and restarts seen (kubelet.sock created).")
                           .With()),
      registrations(registry.AddCounter("pcidevices_plugin_registrations_total",
                                        "Device-plugin registrations with the kubelet, by result.",
                                        {"result"})),
      // One histogram for every resource: per resource it was 64 x 19 series on a node with 64
      // resources, 100 KiB a scrape, for no question an operator asks.
      allocate(registry
                   .AddHistogram("pcidevices_allocate_duration_seconds",
                                 "Time to decide a device plugin's Allocate.")
                   .With()),
      allocations(registry.AddCounter("pcidevices_allocations_total",
                                      "Allocate calls answered, by result (granted, refused).",
                                      {"result"})),
      kernel_jobs(registry
                      .AddHistogram("pcidevices_kernel_job_duration_seconds",
                                    "Time of one kernel job: binding or unbinding a device or an "
                                    "IOMMU group, or changing a PF's VF count.")
                      .With()),
      health_changes(registry.AddCounter("pcidevices_device_health_changes_total",
                                         "Served devices whose health changed, by resource.",
                                         {"resource"})),
      api_requests(registry.AddCounter(
          "pcidevices_api_requests_total",
          "Requests to the Kubernetes API server, by verb and HTTP status (0: no answer).",
          {"verb", "code"})) {}

InventoryMetrics::InventoryMetrics(metrics::Registry& registry) {
  registry.AddCollector("pcidevices_devices", "Devices on the node, by kind and state.",
                        Type::kGauge, {"kind", "state"}, [this] { return Collect(); });
}

void InventoryMetrics::Publish(std::shared_ptr<const projection::Inventory> inventory) {
  {
    MutexLock lock(&mu_);
    last_ = inventory;
  }
  if (next_) next_->Publish(std::move(inventory));
}

metrics::Samples InventoryMetrics::Collect() const {
  std::shared_ptr<const projection::Inventory> inv;
  {
    MutexLock lock(&mu_);
    inv = last_;
  }
  // Every state present, also at 0: a series that vanishes reads as "no data", not "none".
  std::map<std::string, double> pci = {{"vfio-pci", 0}, {"host-driver", 0}, {"no-driver", 0}};
  std::map<std::string, double> usb = {{"served", 0}, {"available", 0}, {"orphaned", 0}};
  if (inv) {
    for (const PciDevice& d : inv->pci) {
      ++pci[d.driver == "vfio-pci" ? "vfio-pci" : d.driver.empty() ? "no-driver" : "host-driver"];
    }
    for (const UsbDevice& u : inv->usb) {
      if (u.device_class == 0x09) continue;  // hubs are not offered
      ++usb[!u.present ? "orphaned" : inv->enabled_usb.count(u.name) ? "served" : "available"];
    }
  }
  metrics::Samples out;
  for (const auto& [state, n] : pci) out.push_back({{"pci", state}, n});
  for (const auto& [state, n] : usb) out.push_back({{"usb", state}, n});
  return out;
}

void HealthChanges::Observe(const std::map<std::string, plugin::Resource>& resources,
                            const std::set<std::string>& changed) {
  for (const std::string& name : changed) {
    auto r = resources.find(name);
    if (r == resources.end()) {
      healthy_.erase(name);
      continue;
    }
    // Updated in place: a plan changes a few devices of a resource, and rebuilding the map cost
    // an allocation per device on the owner thread.
    auto [known, is_new] = healthy_.try_emplace(name);
    std::map<std::string, bool>& ids = known->second;
    uint64_t flips = 0;
    for (const plugin::PluginDevice& d : r->second.devices) {
      auto [id, added] = ids.try_emplace(d.id, d.healthy);
      if (added) continue;
      if (!is_new && id->second != d.healthy) ++flips;
      id->second = d.healthy;
    }
    if (ids.size() > r->second.devices.size()) {  // devices left the resource
      std::set<std::string_view> now;
      for (const plugin::PluginDevice& d : r->second.devices) now.insert(d.id);
      std::erase_if(ids, [&](const auto& e) { return !now.count(e.first); });
    }
    if (flips) counter_.With({name}).Add(flips);
  }
}

void AddProjectionCollectors(metrics::Registry& registry, const projection::Projection& p) {
  registry.AddCollector(
      "pcidevices_api_writes_total", "Writes the projection made to the API server, by kind.",
      Type::kCounter, {"kind"}, [&p] {
        const projection::ProjectionStats s = p.stats();
        return metrics::Samples{{{"create"}, static_cast<double>(s.creates)},
                                {{"status"}, static_cast<double>(s.status_patches)},
                                {{"delete"}, static_cast<double>(s.deletes)},
                                {{"claim"}, static_cast<double>(s.claim_writes)},
                                {{"resourceslice"}, static_cast<double>(s.slice_writes)}};
      });
  registry.AddCollector("pcidevices_api_write_failures_total",
                        "Projection writes the API server refused or did not answer.",
                        Type::kCounter, {}, [&p] {
                          return metrics::Samples{{{}, double(p.stats().failures)}};
                        });
  registry.AddCollector("pcidevices_watch_restarts_total",
                        "Lists made again by the projection's informers (a watch broken, 410 "
                        "Gone), the first lists included.",
                        Type::kCounter, {}, [&p] {
                          return metrics::Samples{{{}, double(p.stats().relists)}};
                        });
}

}  // namespace pcid::cmd
