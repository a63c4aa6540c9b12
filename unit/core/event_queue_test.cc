#include "core/event_queue.h"

#include <poll.h>

#include <boost/test/unit_test.hpp>

#include <vector>

namespace pcid {
namespace {

bool Readable(const EventQueue& q) {
  pollfd p{q.fd(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(event_queue)

BOOST_AUTO_TEST_CASE(runs_everything_in_order) {
  EventQueue q;
  std::vector<int> ran;
  for (int i = 0; i < 5; ++i) q.Post([&ran, i] { ran.push_back(i); });
  BOOST_TEST(Readable(q));
  q.RunPending();
  BOOST_TEST(ran == (std::vector<int>{0, 1, 2, 3, 4}));
  BOOST_TEST(!Readable(q));
}

// A turn past its budget leaves the rest queued, readable, ahead of what was posted meanwhile.
BOOST_AUTO_TEST_CASE(a_slice_leaves_the_rest_in_order) {
  EventQueue q;
  std::vector<int> ran;
  for (int i = 0; i < 4; ++i) {
    q.Post([&ran, &q, i] {
      ran.push_back(i);
      if (i == 0) q.Post([&ran] { ran.push_back(99); });  // posted while the turn runs
    });
  }
  q.RunPending(std::chrono::nanoseconds(0));  // one function, then the budget is spent
  BOOST_TEST(ran == (std::vector<int>{0}));
  BOOST_TEST(Readable(q));
  q.RunPending(std::chrono::nanoseconds(0));
  BOOST_TEST(ran == (std::vector<int>{0, 1}));
  q.RunPending();
  BOOST_TEST(ran == (std::vector<int>{0, 1, 2, 3, 99}));
  BOOST_TEST(!Readable(q));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
