// File: agent/ports.h
//
// The narrow interfaces through which the reconciler (agent/reconciler.h) acts on the world.
// The daemon wires the real ones (kernel binder, plugin manager, projection, PodResources); the
// unit tests wire fakes that record what was asked and answer when the test says so. Every
// callback a port is given runs on the owner thread (the real ports post it there).
#pragma once

#include <absl/status/statusor.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "core/device.h"
#include "plugin/pod_resources.h"
#include "plugin/resources.h"
#include "projection/projection.h"
#include "vfio/vfio.h"

namespace pcid::agent {

// Runs a function on the owner thread, from any thread.
using Post = std::function<void(std::function<void()>)>;

// Slow kernel work (binding, unbinding, VF counts), off the owner thread. Jobs that share a key
// (an IOMMU group, "group:7", or a function without one, "pci:0000:03:00.0") run one at a time,
// in submission order: one operation per device, group-mates together. Jobs without a shared key
// run side by side, so a bind the kernel never answers holds up only its own group.
class Binder {
 public:
  // Runs on a worker. `to_owner` posts to the owner thread (progress of a long batch).
  using Work =
      std::function<void(const vfio::Node& node, vfio::StateStore& store, const Post& to_owner)>;
  virtual ~Binder() = default;
  // `what` names the job in logs; `done` runs on the owner thread after `work` returned.
  virtual void Submit(std::string what, std::set<std::string> keys, Work work,
                      std::function<void()> done) = 0;
  // The recorded intents as of the last save (vfio::StateStore::intents_snapshot), never
  // changed: a new one after every save. Reading it never waits for a save under way.
  virtual std::shared_ptr<const std::map<PciAddress, vfio::Intent>> Intents() const = 0;
  // The recorded VF counts now, by PF (a copy).
  virtual std::map<PciAddress, vfio::VfCountIntent> VfCounts() const = 0;
  // The recorded USB devices, by USBDevice name (a copy).
  virtual std::map<std::string, vfio::UsbRecord> UsbRecords() const = 0;
  // The recorded mdevs, by UUID (a copy; a node keeps a few dozen).
  virtual std::map<std::string, vfio::MdevIntent> MdevIntents() const = 0;
  // The recorded vendor vGPU types, by VF (a copy).
  virtual std::map<PciAddress, vfio::VgpuTypeIntent> VgpuTypes() const = 0;
};

// The key a job on `dev` holds: its IOMMU group, or its address when it has none.
std::string BindKey(const PciDevice& dev);

// The kubelet's device plugins (plugin/manager.h).
class PluginSink {
 public:
  virtual ~PluginSink() = default;
  // `resources` is the whole plan; only the resources named in `changed` differ from the last
  // one (a name not in `resources` is gone).
  virtual void Apply(const std::map<std::string, plugin::Resource>& resources,
                     const std::set<std::string>& changed) = 0;
  virtual void RegisterAll() = 0;  // kubelet.sock (re)appeared
  virtual void OnSocketDeleted(const std::string& file_name, bool register_now) = 0;
};

// The projection (projection/projection.h), when there is an API server.
class InventoryPublisher {
 public:
  virtual ~InventoryPublisher() = default;
  virtual void Publish(std::shared_ptr<const projection::Inventory> inventory) = 0;
};

// The kubelet's PodResources API: who holds which device, every resource's devices.
class PodResourcesLister {
 public:
  virtual ~PodResourcesLister() = default;
  // `done` runs on the owner thread, once.
  virtual void List(std::function<void(absl::StatusOr<plugin::DeviceHolders>)> done) = 0;
};

}  // namespace pcid::agent
