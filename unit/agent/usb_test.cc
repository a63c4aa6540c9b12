// USB devices through the reconciler: followed across re-plug and restart by their identity,
// orphaned while a claimed one is gone (agent/usb_identity.h, the state file's usbDevices).
#include <boost/test/unit_test.hpp>

#include "agent/reconciler.h"
#include "unit/agent/fakes.h"
#include "unit/udev/usb_fixture.h"

namespace pcid::agent {
namespace {

using namespace testing;
using pcid::testing::PlugUsb;
using pcid::testing::UnplugUsb;
using pcid::testing::UsbSpec;
using projection::ClaimOutcome;

constexpr char kXhci[] = "0000:00:14.0";
constexpr char kStick[] = "node1-0951-1666-001004";  // first seen as bus 1, device 4

struct UsbFixture : AgentFixture {
  std::string hc;
  UsbFixture() {
    kernel.AddFunction(
        {.address = kXhci, .klass = "0x0c0330", .driver = "xhci_hcd", .group = "20"});
    hc = sys.DirOf(kXhci);
  }
  void Plug(UsbSpec u) {
    PlugUsb(sys, hc, u);
    reconciler->OnUevents({{"usb", "add", u.name}});
  }
  void Unplug(const std::string& name) {
    UnplugUsb(sys, hc, name);
    reconciler->OnUevents({{"usb", "remove", name}});
  }
  std::optional<ClaimOutcome> UsbClaim(bool enable, const std::string& name) {
    std::optional<ClaimOutcome> out;
    reconciler->OnClaim({true, enable, name}, [&out](ClaimOutcome o) { out = std::move(o); });
    return out;
  }
  const UsbDevice* Published(const std::string& name) const {
    for (const UsbDevice& u : publisher.last->usb) {
      if (u.name == name) return &u;
    }
    return nullptr;
  }
  // A restart of the agent: a new reconciler over the same state directory.
  void Restart() {
    reconciler.reset();
    binder.reset();
    Start();
    reconciler->set_publisher(&publisher);
  }
  // The stick claimed and recorded, then unplugged while the agent is down; the agent restarted.
  void ClaimedStickGoneWhileDown() {
    PlugUsb(sys, hc, {.name = "1-1", .devnum = 4});
    Start();
    BOOST_TEST(UsbClaim(true, kStick)->ok);
    Settle();
    UnplugUsb(sys, hc, "1-1");
    Restart();
  }
  // The start-up sweep of USB claims, `keep` being the USBDeviceClaims listed.
  std::optional<ClaimOutcome> SweepUsb(std::vector<std::string> keep) {
    std::optional<ClaimOutcome> out;
    reconciler->OnClaim(
        {.usb = true, .enable = false, .device = "", .sweep = true, .keep = std::move(keep)},
        [&out](ClaimOutcome o) { out = std::move(o); });
    return out;
  }
};

BOOST_AUTO_TEST_SUITE(usb)

BOOST_AUTO_TEST_CASE(claimed_stick_unplugged_is_orphaned_and_served_again_in_the_same_port) {
  UsbFixture f;
  PlugUsb(f.sys, f.hc, {.name = "1-1", .devnum = 4});
  f.Start();
  f.reconciler->set_publisher(&f.publisher);
  auto out = f.UsbClaim(true, kStick);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->ok, out->message);
  f.Settle();  // the record is saved by a job
  BOOST_TEST(f.binder->store().usb_devices().at(kStick).claimed);
  BOOST_TEST(f.binder->store().usb_devices().at(kStick).device.port == "0000:00:14.0-1");

  f.Unplug("1-1");
  const plugin::PluginDevice* d = f.plugins.Device(kStick);
  BOOST_REQUIRE(d != nullptr);  // still listed, under the same ID
  BOOST_TEST(!d->healthy);
  BOOST_TEST(d->health_reason == "unplugged (orphaned)");
  BOOST_REQUIRE(f.Published(kStick) != nullptr);
  BOOST_TEST(!f.Published(kStick)->present);
  BOOST_TEST(f.publisher.last->enabled_usb.count(kStick) == 1u);
  BOOST_TEST(f.log.text().find("usb " + std::string(kStick) +
                               ": unplugged while enabled: orphaned until plugged back in at "
                               "port 0000:00:14.0-1") != std::string::npos,
             f.log.text());

  // Back in the same port: a new device number, the same name, served again without a claim.
  f.Plug({.name = "1-1", .devnum = 7});
  d = f.plugins.Device(kStick);
  BOOST_REQUIRE(d != nullptr);
  BOOST_TEST(d->healthy);
  BOOST_TEST(d->env_value == "1:7");
  BOOST_TEST(d->nodes.at(0).path == "/dev/bus/usb/001/007");
  BOOST_TEST(f.Published(kStick)->present);
  BOOST_TEST(f.Published(kStick)->devnum == 7u);

  // Without a serial, another port is another device: a name of its own, the claimed one
  // orphaned again.
  f.Unplug("1-1");
  f.Plug({.name = "1-2", .devnum = 8});
  BOOST_TEST(!f.plugins.Device(kStick)->healthy);
  BOOST_TEST(f.Published("node1-0951-1666-001008") != nullptr);
  BOOST_TEST(f.plugins.Device("node1-0951-1666-001008") == nullptr);  // nobody enabled it
}

BOOST_AUTO_TEST_CASE(with_a_serial_it_keeps_its_name_in_any_port_even_usb3) {
  UsbFixture f;
  PlugUsb(f.sys, f.hc, {.name = "1-1", .devnum = 4, .serial = "SN-1"});
  f.Start();
  f.reconciler->set_publisher(&f.publisher);
  BOOST_TEST(f.UsbClaim(true, kStick)->ok);
  f.Unplug("1-1");
  f.Plug({.name = "2-3", .devnum = 2, .serial = "SN-1", .root_speed = "5000"});
  const plugin::PluginDevice* d = f.plugins.Device(kStick);
  BOOST_REQUIRE(d != nullptr);
  BOOST_TEST(d->healthy);
  BOOST_TEST(d->env_value == "2:2");
  BOOST_TEST(f.Published(kStick)->port == "0000:00:14.0-usb3-3");
  f.Settle();
  BOOST_TEST(f.binder->store().usb_devices().at(kStick).device.port == "0000:00:14.0-usb3-3");
  BOOST_TEST(f.log.text().find("plugged back in at port 0000:00:14.0-usb3-3 (bus 2 device 2), "
                               "serial SN-1") != std::string::npos,
             f.log.text());
}

BOOST_AUTO_TEST_CASE(after_a_restart_a_gone_claimed_stick_is_orphaned_and_found_again) {
  UsbFixture f;
  f.ClaimedStickGoneWhileDown();
  const plugin::PluginDevice* d = f.plugins.Device(kStick);
  BOOST_REQUIRE(d != nullptr);
  BOOST_TEST(!d->healthy);
  BOOST_REQUIRE(f.Published(kStick) != nullptr);
  BOOST_TEST(!f.Published(kStick)->present);
  BOOST_TEST(f.log.text().find("recorded as enabled but not plugged in: orphaned until plugged in "
                               "at port 0000:00:14.0-1") != std::string::npos,
             f.log.text());
  // The claim is still there: the sweep keeps it, and its enable is answered though it is gone.
  auto swept = f.SweepUsb({kStick});
  BOOST_REQUIRE(swept.has_value());
  BOOST_TEST(swept->ok);
  BOOST_TEST(f.plugins.Device(kStick) != nullptr);
  auto out = f.UsbClaim(true, kStick);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->ok);
  BOOST_TEST(out->message.find("orphaned") != std::string::npos, out->message);
  // After a reboot the bus numbers differ: the port finds it.
  f.Plug({.name = "1-1", .devnum = 2});
  BOOST_TEST(f.plugins.Device(kStick)->healthy);
  BOOST_TEST(f.Published(kStick)->devnum == 2u);
}

BOOST_AUTO_TEST_CASE(a_claim_gone_while_the_agent_was_down_lets_the_stick_go) {
  UsbFixture f;
  f.ClaimedStickGoneWhileDown();
  BOOST_REQUIRE(f.plugins.Device(kStick) != nullptr);
  // A pod still holds it: kept.
  f.pods.held[kStick] = "default/vm-a/compute";
  BOOST_TEST(f.SweepUsb({})->ok);
  BOOST_TEST(f.plugins.Device(kStick) != nullptr);
  BOOST_TEST(f.log.text().find("its claim is gone but") != std::string::npos, f.log.text());
  f.pods.held.clear();
  f.Restart();
  BOOST_TEST(f.SweepUsb({})->ok);
  BOOST_TEST(f.plugins.Device(kStick) == nullptr);
  BOOST_TEST(f.Published(kStick) == nullptr);  // its USBDevice goes
  f.Settle();
  BOOST_TEST(f.binder->store().usb_devices().empty());
  // Plugged back in later: a device like any other, under the name of today's numbers.
  f.Plug({.name = "1-1", .devnum = 5});
  BOOST_TEST(f.Published("node1-0951-1666-001005") != nullptr);
  BOOST_TEST(f.Published(kStick) == nullptr);
}

BOOST_AUTO_TEST_CASE(a_config_enabled_stick_keeps_its_resource_until_the_config_drops_it) {
  UsbFixture f;
  PlugUsb(f.sys, f.hc, {.name = "1-1", .devnum = 4});
  DeviceSelector stick;
  stick.vendor = 0x0951;
  DaemonConfig config;
  config.enable = {stick};
  f.Start(config);
  f.reconciler->set_publisher(&f.publisher);
  BOOST_TEST(f.plugins.Device(kStick) != nullptr);
  f.Unplug("1-1");
  BOOST_TEST(!f.plugins.Device(kStick)->healthy);
  f.Plug({.name = "1-1", .devnum = 9});
  BOOST_TEST(f.plugins.Device(kStick)->healthy);  // same resource name, not ...-001009
  f.Unplug("1-1");
  f.reconciler->OnConfig({});
  BOOST_TEST(f.plugins.Device(kStick) == nullptr);
  BOOST_TEST(f.Published(kStick) == nullptr);
  f.Settle();
  BOOST_TEST(f.binder->store().usb_devices().empty());
}

BOOST_AUTO_TEST_CASE(claims_for_hubs_or_unknown_devices_are_refused) {
  UsbFixture f;
  PlugUsb(f.sys, f.hc, {.name = "1-1", .devnum = 4});
  f.Start();
  auto out = f.UsbClaim(true, "node1-1d6b-0002-001001");  // the root hub
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(!out->ok);
  out = f.UsbClaim(true, "node1-0951-1666-001099");
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(out->reason == "DeviceNotFound");
  f.Settle();
  BOOST_TEST(f.binder->store().usb_devices().empty());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::agent
