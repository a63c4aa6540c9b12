#define BOOST_TEST_MODULE agent_test
#include <boost/test/unit_test.hpp>
