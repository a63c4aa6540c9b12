#define BOOST_TEST_MODULE cmd_test
#include <boost/test/unit_test.hpp>
