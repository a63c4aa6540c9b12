#include "cmd/table.h"

#include <boost/test/unit_test.hpp>

namespace pcid::cmd {

BOOST_AUTO_TEST_SUITE(table)

BOOST_AUTO_TEST_CASE(aligns_like_kubectl_get) {
  BOOST_TEST(FormatTable({"NAME", "ADDRESS", "DESCRIPTION"},
                         {{"node-000001000", "0000:01:00.0", "VGA: NVIDIA"}, {"n", "a", ""}}) ==
             "NAME             ADDRESS        DESCRIPTION\n"
             "node-000001000   0000:01:00.0   VGA: NVIDIA\n"
             "n                a\n");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid::cmd
