#include "core/thread_priority.h"

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <string>
#include <thread>

namespace pcid {
namespace {

// Runs `fn` on a thread of its own, so the test process's own threads keep their priority.
template <typename Fn>
void OnNewThread(Fn fn) {
  std::thread t(fn);
  t.join();
}

int NiceOfNewThread() {
  int nice = 99;
  OnNewThread([&] { nice = ThisThreadNice(); });
  return nice;
}

BOOST_AUTO_TEST_SUITE(thread_priority)

BOOST_AUTO_TEST_CASE(a_raise_stays_on_its_thread_and_is_not_inherited) {
  const int process_nice = ThisThreadNice();
  OnNewThread([&] {
    const int before = ThisThreadNice();
    const absl::Status st = PrioritizeThisThread(-5);
    if (st.ok()) {
      BOOST_TEST(ThisThreadNice() == -5);
      // SCHED_RESET_ON_FORK: a thread started from here begins at nice 0, not -5.
      BOOST_TEST(NiceOfNewThread() == 0);
    } else {
      // Without CAP_SYS_NICE: refused, named, and nothing changed.
      BOOST_TEST(st.code() == absl::StatusCode::kPermissionDenied);
      BOOST_TEST(std::string(st.message()).find("setpriority(-5) of thread") != std::string::npos,
                 st.message());
      BOOST_TEST(ThisThreadNice() == before);
      BOOST_TEST(NiceOfNewThread() == before);
    }
  });
  BOOST_TEST(ThisThreadNice() == process_nice);
}

BOOST_AUTO_TEST_CASE(a_lowered_priority_is_inherited_as_the_kernel_resets_only_raises) {
  // Lowering needs no privilege, so this case runs the same everywhere.
  const int process_nice = ThisThreadNice();
  OnNewThread([&] {
    const int target = std::max(process_nice, 0) + 3;
    BOOST_TEST_REQUIRE(PrioritizeThisThread(target).ok());
    BOOST_TEST(ThisThreadNice() == target);
    BOOST_TEST(NiceOfNewThread() == target);
  });
  BOOST_TEST(ThisThreadNice() == process_nice);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid
