#include "core/backoff.h"

#include <boost/test/unit_test.hpp>
#include <set>
#include <vector>

#include "core/clock.h"

namespace pcid {
namespace {

using std::chrono::milliseconds;

BOOST_AUTO_TEST_SUITE(backoff)

BOOST_AUTO_TEST_CASE(doubles_up_to_max_without_jitter) {
  Backoff b({milliseconds(100), milliseconds(1000), 0.0});
  std::vector<int64_t> got;
  for (int i = 0; i < 6; ++i) got.push_back(b.Next().count());
  BOOST_TEST(got == (std::vector<int64_t>{100, 200, 400, 800, 1000, 1000}),
             boost::test_tools::per_element());
  b.Reset();
  BOOST_TEST(b.Next().count() == 100);
}

BOOST_AUTO_TEST_CASE(jitter_stays_in_its_band_and_varies) {
  Backoff b({milliseconds(1000), milliseconds(1000), 0.25}, /*seed=*/7);
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) {
    const int64_t d = b.Next().count();
    BOOST_TEST(d >= 750);
    BOOST_TEST(d <= 1250);
    seen.insert(d);
  }
  BOOST_TEST(seen.size() > 50u);  // spread out, not one value
}

BOOST_AUTO_TEST_CASE(many_failures_do_not_overflow) {
  Backoff b({milliseconds(100), milliseconds(30000), 0.0});
  for (int i = 0; i < 1000; ++i) b.Next();
  BOOST_TEST(b.Next().count() == 30000);
}

BOOST_AUTO_TEST_CASE(fake_clock_moves_only_when_told) {
  FakeClock clock;
  const auto t0 = clock.Now();
  BOOST_TEST((clock.Now() == t0));
  clock.Advance(milliseconds(1500));
  BOOST_TEST((clock.Now() - t0 == milliseconds(1500)));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace pcid
