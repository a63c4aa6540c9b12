// Hotplug test harness: the pcidevices daemon and a umockdev testbed in one process.
//
//   umockdev-wrapper uevent_injector DAEMON_ARGS...
//
// umockdev delivers synthetic uevents to libudev monitors of the process that owns the testbed
// (across processes it did not here), so the daemon runs in a thread of this process, its /sys
// being the testbed's. Prints {"dir": TESTBED_DIR}, then reads commands, one a line:
//   start                                starts `pcidevices daemon DAEMON_ARGS` in a thread (after
//                                        the caller has filled TESTBED_DIR/sys)
//   add-pci ADDR VENDOR DEVICE CLASS     adds /sys/devices/pci0000:00/ADDR with those attributes
//                                        (hex without 0x) and a uevent; emits "add"
//   add-bound-pci ADDR VENDOR DEVICE CLASS GROUP
//                                        the same, already on vfio-pci in IOMMU group GROUP (links
//                                        and /dev/vfio/GROUP in place), as a hot-plugged function
//                                        the kernel has bound; emits "add"
//   add-record FILE                      adds the device of the umockdev record in FILE (its
//                                        "P:" path; links and attributes in place) and emits
//                                        "add", as the kernel announces a device it made (an
//                                        mdev); answers its syspath and "sent_us"
//   link SYSPATH_REL NAME TARGET         creates the symlink /sys/SYSPATH_REL/NAME -> TARGET
//   uevent SYSPATH ACTION                emits ACTION for /sys/... SYSPATH
//   remove SYSPATH                       emits "remove", then deletes the device
//   quit                                 SIGTERM to the daemon, waits for it, exits with its code
// Each command answers one line: {"ok": true, "syspath": ...} or {"ok": false, ...}.
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <umockdev.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cmd/daemon_command.h"

// Wall clock in microseconds, as the kubelet emulator stamps its events ("t_us"): replies carry
// the moment the uevent left ("sent_us"), so latencies exclude this harness.
long long NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// umockdev sends each uevent without blocking to every listener socket (ROOT/event<N>) and exits
// the process when one's queue is full (net.unix.max_dgram_qlen, 10), which a burst of adds
// reaches while the daemon is busy for a moment. A socket connected to a listener polls writable
// only while that listener's queue has room, so wait for that (up to 5 s) before each uevent.
void WaitForListenerRoom(const std::string& root) {
  glob_t found{};
  if (::glob((root + "/event[0-9]*").c_str(), GLOB_NOSORT, nullptr, &found) != 0) return;
  for (size_t i = 0; i < found.gl_pathc; ++i) {
    const int fd = ::socket(AF_UNIX, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", found.gl_pathv[i]);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 5000);
    }
    ::close(fd);
  }
  ::globfree(&found);
}

// Sends ACTION for SYSPATH once the daemon's listener can take it; returns when it left.
long long SendUevent(UMockdevTestbed* tb, const std::string& root, const std::string& syspath,
                     const char* action) {
  WaitForListenerRoom(root);
  const long long sent = NowUs();
  umockdev_testbed_uevent(tb, syspath.c_str(), action);
  return sent;
}

int main(int argc, char** argv) {
  // The daemon takes SIGTERM through a signalfd: block it in every thread, this one first.
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  const std::vector<std::string> daemon_args(argv + 1, argv + argc);
  std::thread daemon;
  int daemon_rc = -1;

  UMockdevTestbed* tb = umockdev_testbed_new();
  gchar* root = umockdev_testbed_get_root_dir(tb);
  std::cout << "{\"dir\": \"" << root << "\"}" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "start" && !daemon.joinable()) {
      daemon = std::thread([&] { daemon_rc = pcid::cmd::RunDaemon(daemon_args); });
      std::cout << "{\"ok\": true}" << std::endl;
    } else if (cmd == "quit") {
      break;
    } else if (cmd == "add-pci") {
      std::string addr, vendor, device, klass;
      in >> addr >> vendor >> device >> klass;
      const std::string uevent = "PCI_CLASS=" + klass + "\nPCI_ID=" + vendor + ":" + device +
                                 "\nPCI_SLOT_NAME=" + addr + "\n";
      WaitForListenerRoom(root);  // adding sends an "add" of its own
      gchar* syspath = umockdev_testbed_add_device(
          tb, "pci", addr.c_str(), nullptr, "vendor", ("0x" + vendor).c_str(), "device",
          ("0x" + device).c_str(), "class", ("0x" + klass).c_str(), "numa_node", "0", "uevent",
          uevent.c_str(), nullptr, "PCI_SLOT_NAME", addr.c_str(), "PCI_ID",
          (vendor + ":" + device).c_str(), nullptr);
      if (syspath == nullptr) {
        std::cout << "{\"ok\": false}" << std::endl;
        continue;
      }
      // umockdev puts the device under /sys/devices/<addr>; bus/pci/devices links it.
      std::cout << "{\"ok\": true, \"syspath\": \"" << syspath << "\"}" << std::endl;
      g_free(syspath);
    } else if (cmd == "add-bound-pci") {
      std::string addr, vendor, device, klass, group;
      in >> addr >> vendor >> device >> klass >> group;
      const std::string path = "/sys/devices/" + addr;
      // A umockdev record: links cannot be given to add_device, and the daemon must see them
      // in place when the "add" arrives (a real kernel assigns the group before it).
      const std::string record =
          "P: /devices/" + addr +
          "\nE: SUBSYSTEM=pci\nE: DRIVER=vfio-pci\nE: PCI_SLOT_NAME=" + addr +
          "\nE: PCI_ID=" + vendor + ":" + device + "\nA: vendor=0x" + vendor + "\nA: device=0x" +
          device + "\nA: class=0x" + klass +
          "\nA: numa_node=0\nA: driver_override=vfio-pci\\n\nA: "
          "uevent=DRIVER=vfio-pci\\nPCI_CLASS=" +
          klass + "\\nPCI_ID=" + vendor + ":" + device + "\\nPCI_SLOT_NAME=" + addr +
          "\\n\nL: driver=../../bus/pci/drivers/vfio-pci\nL: "
          "iommu_group=../../kernel/iommu_groups/" +
          group + "\n";
      const std::string groups = std::string(root) + "/sys/kernel/iommu_groups/" + group;
      ::mkdir(groups.c_str(), 0755);
      ::mkdir((groups + "/devices").c_str(), 0755);
      const std::string node = std::string(root) + "/dev/vfio/" + group;
      if (FILE* f = std::fopen(node.c_str(), "w")) std::fclose(f);
      GError* error = nullptr;
      WaitForListenerRoom(root);  // adding sends an "add" of its own
      if (!umockdev_testbed_add_from_string(tb, record.c_str(), &error)) {
        std::cout << "{\"ok\": false, \"error\": \"" << (error ? error->message : "?") << "\"}"
                  << std::endl;
        g_clear_error(&error);
        continue;
      }
      const long long sent = SendUevent(tb, root, path, "add");
      std::cout << "{\"ok\": true, \"syspath\": \"" << path << "\", \"sent_us\": " << sent << "}"
                << std::endl;
    } else if (cmd == "add-record") {
      std::string file;
      in >> file;
      std::ifstream text(file);
      const std::string record((std::istreambuf_iterator<char>(text)),
                               std::istreambuf_iterator<char>());
      const size_t p = record.find("P: ");
      const std::string path =
          p == std::string::npos ? "" : "/sys" + record.substr(p + 3, record.find('\n', p) - p - 3);
      GError* error = nullptr;
      WaitForListenerRoom(root);  // adding sends an "add" of its own
      if (path.empty() || !umockdev_testbed_add_from_string(tb, record.c_str(), &error)) {
        std::cout << "{\"ok\": false, \"error\": \"" << (error ? error->message : "no P: line")
                  << "\"}" << std::endl;
        g_clear_error(&error);
        continue;
      }
      const long long sent = SendUevent(tb, root, path, "add");
      std::cout << "{\"ok\": true, \"syspath\": \"" << path << "\", \"sent_us\": " << sent << "}"
                << std::endl;
    } else if (cmd == "link") {
      std::string rel, name, target;
      in >> rel >> name >> target;
      const std::string path = std::string(root) + "/" + rel + "/" + name;
      ::unlink(path.c_str());
      const bool ok = ::symlink(target.c_str(), path.c_str()) == 0;
      std::cout << "{\"ok\": " << (ok ? "true" : "false") << "}" << std::endl;
    } else if (cmd == "uevent") {
      std::string syspath, action;
      in >> syspath >> action;
      SendUevent(tb, root, syspath, action.c_str());
      std::cout << "{\"ok\": true}" << std::endl;
    } else if (cmd == "remove") {
      std::string syspath;
      in >> syspath;
      const long long sent = SendUevent(tb, root, syspath, "remove");
      umockdev_testbed_remove_device(tb, syspath.c_str());
      std::cout << "{\"ok\": true, \"sent_us\": " << sent << "}" << std::endl;
    } else {
      std::cout << "{\"ok\": false, \"error\": \"bad command\"}" << std::endl;
    }
  }
  if (daemon.joinable()) {
    ::kill(::getpid(), SIGTERM);
    daemon.join();
  }
  std::cout << "{\"exit\": " << daemon_rc << "}" << std::endl;
  g_free(root);
  g_object_unref(tb);
  return daemon_rc < 0 ? 0 : daemon_rc;
}
