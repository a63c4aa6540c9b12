// The REST client against a local HTTP server (cpp-httplib on 127.0.0.1): bearer token, re-read
// when its file changes, oversized answers refused, a watch split into lines.
#include "projection/kube_client.h"

#include <httplib.h>

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "unit/temp_tree.h"

namespace pcid::projection {
namespace {

struct LocalServer {
  httplib::Server server;
  int port = 0;
  std::thread thread;
  std::string last_auth;
  std::atomic<int> requests{0};
  std::atomic<bool> release{false};  // ends /idle-watch's stream
  LocalServer() {
    server.set_pre_routing_handler([this](const httplib::Request&, httplib::Response&) {
      ++requests;
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // A watch with one event and then silence, as an idle cluster's watch is.
    server.Get("/idle-watch", [this](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/json", [this](size_t, httplib::DataSink& sink) {
        static constexpr std::string_view kEvent = "{\"type\":\"ADDED\"}\n";
        sink.write(kEvent.data(), kEvent.size());
        while (!release && sink.is_writable())
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        sink.done();
        return true;
      });
    });
    server.Get("/small", [this](const httplib::Request& req, httplib::Response& res) {
      last_auth = req.get_header_value("Authorization");
      res.set_content("{\"ok\":true}", "application/json");
    });
    server.Get("/huge", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(9 << 20, 'x'), "application/json");
    });
    server.Get("/watch", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("{\"a\":1}\n{\"b\":2}\n{\"c\"", "application/json");
    });
    port = server.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server.listen_after_bind(); });
    while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~LocalServer() {
    release = true;
    server.stop();
    thread.join();
  }
};

BOOST_AUTO_TEST_CASE(token_file_rotation_oversized_answers_and_watch_lines) {
  LocalServer local;
  testing::TempTree dir;
  dir.WriteFile("token", "first\n");
  KubeConfig config;
  config.https = false;
  config.host = "127.0.0.1";
  config.port = local.port;
  config.token_file = dir.path() + "/token";
  auto client = KubeClient::Create(config);
  BOOST_REQUIRE(client.ok());
  auto res = (*client)->Call("GET", "/small");
  BOOST_REQUIRE(res.ok());
  BOOST_TEST(res->status == 200);
  BOOST_TEST(local.last_auth == "Bearer first");
  // The kubelet rewrites projected tokens by rename: a new file, a new mtime.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  dir.WriteFile("token.new", "second");
  std::filesystem::rename(dir.root() / "token.new", dir.root() / "token");
  BOOST_REQUIRE((*client)->Call("GET", "/small").ok());
  BOOST_TEST(local.last_auth == "Bearer second");
  // A rotation within the clock's granularity: same mtime, same size, but a new file (inode).
  const auto mtime = std::filesystem::last_write_time(dir.root() / "token");
  dir.WriteFile("token.new", "third!");
  std::filesystem::last_write_time(dir.root() / "token.new", mtime);
  std::filesystem::rename(dir.root() / "token.new", dir.root() / "token");
  BOOST_REQUIRE((*client)->Call("GET", "/small").ok());
  BOOST_TEST(local.last_auth == "Bearer third!");

  auto huge = (*client)->Call("GET", "/huge");
  BOOST_TEST(absl::IsResourceExhausted(huge.status()), huge.status().message());

  std::vector<std::string> lines;
  auto status = (*client)->Stream("/watch", [&](std::string_view l) {
    lines.emplace_back(l);
    return true;
  });
  BOOST_REQUIRE(status.ok());
  BOOST_TEST(*status == 200);
  const std::vector<std::string> want = {"{\"a\":1}", "{\"b\":2}", "{\"c\""};
  BOOST_TEST(lines == want, boost::test_tools::per_element());

  config.port = 1;  // nothing listens there
  auto down = KubeClient::Create(config);
  BOOST_TEST(absl::IsUnavailable((*down)->Call("GET", "/small").status()));
}

// Stop() from another thread ends a silent watch at once, and every later request is refused
// without reaching the server: a daemon's shutdown never waits for a watch's timeout.
BOOST_AUTO_TEST_CASE(stop_ends_a_silent_watch_and_refuses_later_requests) {
  LocalServer local;
  KubeConfig config;
  config.https = false;
  config.host = "127.0.0.1";
  config.port = local.port;
  auto client = KubeClient::Create(config);
  BOOST_REQUIRE(client.ok());
  std::atomic<int> lines{0};
  absl::StatusOr<int> status = 0;
  std::thread watcher([&] {
    status = (*client)->Stream("/idle-watch", [&](std::string_view) {
      ++lines;
      return true;
    });
  });
  while (lines == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto began = std::chrono::steady_clock::now();
  (*client)->Stop();
  watcher.join();
  const double took_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  BOOST_TEST(took_s < 5.0);    // not the 30 s read timeout
  BOOST_TEST(!local.release);  // the client ended it, not the server
  const int seen = local.requests;
  auto after = (*client)->Call("GET", "/small");
  BOOST_TEST(absl::IsCancelled(after.status()), after.status().message());
  auto watch_after = (*client)->Stream("/idle-watch", [](std::string_view) { return true; });
  BOOST_TEST(absl::IsCancelled(watch_after.status()), watch_after.status().message());
  BOOST_TEST(local.requests == seen);
}

}  // namespace
}  // namespace pcid::projection
