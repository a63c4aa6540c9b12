// The metrics registry's text exposition: names, labels (escaped), histogram buckets
// (cumulative, +Inf = count), collectors; and concurrent updates lose nothing.
#include "core/metrics.h"

#include <boost/test/unit_test.hpp>
#include <thread>
#include <vector>

namespace pcid::metrics {
namespace {

BOOST_AUTO_TEST_SUITE(metrics)

BOOST_AUTO_TEST_CASE(counters_gauges_and_collectors_render_in_the_text_format) {
  Registry r;
  auto& requests =
      r.AddCounter("pcidevices_api_requests_total", "Requests.\nBy verb.", {"verb", "code"});
  requests.With({"GET", "200"}).Add(3);
  requests.With({"PATCH", "409"}).Add();
  r.AddGauge("pcidevices_up", "Whether it is up.").With().Set(1);
  r.AddCollector("pcidevices_devices", "Devices.", Type::kGauge, {"kind"}, [] {
    return Samples{{{"pci \"x\"\\"}, 2.5}};
  });
  BOOST_TEST(r.Render() ==
             "# HELP pcidevices_api_requests_total Requests.\\nBy verb.\n"
             "# TYPE pcidevices_api_requests_total counter\n"
             "pcidevices_api_requests_total{verb=\"GET\",code=\"200\"} 3\n"
             "pcidevices_api_requests_total{verb=\"PATCH\",code=\"409\"} 1\n"
             "# HELP pcidevices_up Whether it is up.\n"
             "# TYPE pcidevices_up gauge\n"
             "pcidevices_up 1\n"
             "# HELP pcidevices_devices Devices.\n"
             "# TYPE pcidevices_devices gauge\n"
             "pcidevices_devices{kind=\"pci \\\"x\\\"\\\\\"} 2.5\n");
}

BOOST_AUTO_TEST_CASE(histograms_are_cumulative_with_sum_and_count) {
  Registry r;
  auto& h = r.AddHistogram("pcidevices_allocate_duration_seconds", "Allocate.", {"resource"},
                           {0.001, 0.01});
  auto& a = h.With({"nvidia.com/GP106"});
  a.Observe(std::chrono::microseconds(500));  // <= 1 ms
  a.Observe(std::chrono::milliseconds(1));    // on the bound: le is inclusive
  a.Observe(std::chrono::milliseconds(5));
  a.Observe(std::chrono::seconds(2));  // only +Inf
  const std::string text = r.Render();
  const std::string l = "{resource=\"nvidia.com/GP106\"";
  for (const std::string& want :
       {"pcidevices_allocate_duration_seconds_bucket" + l + ",le=\"0.001\"} 2\n",
        "pcidevices_allocate_duration_seconds_bucket" + l + ",le=\"0.01\"} 3\n",
        "pcidevices_allocate_duration_seconds_bucket" + l + ",le=\"+Inf\"} 4\n",
        "pcidevices_allocate_duration_seconds_sum" + l + "} 2.0065\n",
        "pcidevices_allocate_duration_seconds_count" + l + "} 4\n"}) {
    BOOST_TEST(text.find(want) != std::string::npos, want << " in\n" << text);
  }
}

BOOST_AUTO_TEST_CASE(concurrent_updates_lose_nothing) {
  Registry r;
  auto& c = r.AddCounter("c_total", "c", {"t"});
  auto& h = r.AddHistogram("h_seconds", "h");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        c.With({t % 2 ? "odd" : "even"}).Add();
        h.With().Observe(std::chrono::microseconds(i));
        if (i % 1000 == 0) (void)r.Render();
      }
    });
  }
  for (auto& t : threads) t.join();
  BOOST_TEST(c.With({"odd"}).value() == 20000u);
  BOOST_TEST(c.With({"even"}).value() == 20000u);
  BOOST_TEST(h.With().Read().count == 40000u);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::metrics
