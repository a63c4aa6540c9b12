// The metrics endpoint over real HTTP on 127.0.0.1: its three paths, 404 and 405, probes'
// answers; and which bind addresses are accepted.
#include "cmd/metrics_server.h"

#include <httplib.h>

#include <boost/test/unit_test.hpp>

namespace pcid::cmd {
namespace {

BOOST_AUTO_TEST_SUITE(metrics_server)

BOOST_AUTO_TEST_CASE(bind_addresses) {
  auto any = ParseBindAddress(":9808");
  BOOST_REQUIRE(any.ok());
  BOOST_TEST(any->host == "0.0.0.0");
  BOOST_TEST(any->port == 9808);
  auto local = ParseBindAddress("127.0.0.1:0");
  BOOST_REQUIRE(local.ok());
  BOOST_TEST(local->host == "127.0.0.1");
  auto v6 = ParseBindAddress("[::1]:9808");
  BOOST_REQUIRE(v6.ok());
  BOOST_TEST(v6->host == "::1");
  for (const char* bad :
       {"", "9808", ":", ":65536", ":-1", ":80x", "a:b:80", ":+80", "host/x:80", ":999999"}) {
    auto r = ParseBindAddress(bad);
    BOOST_TEST(!r.ok(), bad);
    if (!r.ok()) BOOST_TEST(std::string(r.status().message()).find("--metrics-bind-address") == 0u);
  }
}

BOOST_AUTO_TEST_CASE(serves_metrics_and_probes_and_refuses_the_rest) {
  bool ready = false;
  MetricsHandlers h;
  h.metrics = [] { return std::string("pcidevices_up 1\n"); };
  h.healthz = [] { return ProbeResult{true, ""}; };
  h.readyz = [&ready] { return ProbeResult{ready, "2 of 3 device plugins not registered"}; };
  auto server = MetricsServer::Start({"127.0.0.1", 0}, h);
  BOOST_REQUIRE(server.ok());
  httplib::Client c("127.0.0.1", (*server)->port());
  auto m = c.Get("/metrics");
  BOOST_REQUIRE(m);
  BOOST_TEST(m->status == 200);
  BOOST_TEST(m->body == "pcidevices_up 1\n");
  BOOST_TEST(m->get_header_value("Content-Type").find("text/plain; version=0.0.4") == 0u);
  auto health = c.Get("/healthz");
  BOOST_REQUIRE(health);
  BOOST_TEST(health->status == 200);
  auto notready = c.Get("/readyz");
  BOOST_REQUIRE(notready);
  BOOST_TEST(notready->status == 503);
  BOOST_TEST(notready->body == "2 of 3 device plugins not registered\n");
  ready = true;
  BOOST_TEST(c.Get("/readyz")->status == 200);
  BOOST_TEST(c.Get("/")->status == 404);
  BOOST_TEST(c.Get("/metrics/../x")->status == 404);
  auto post = c.Post("/metrics", "x", "text/plain");
  BOOST_REQUIRE(post);
  BOOST_TEST(post->status == 405);
  BOOST_TEST(post->get_header_value("Allow") == "GET, HEAD");
  BOOST_TEST(c.Delete("/healthz")->status == 405);
  // The same port again: in use, a clear error.
  auto again = MetricsServer::Start({"127.0.0.1", (*server)->port()}, h);
  BOOST_TEST(!again.ok());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid::cmd
