#define BOOST_TEST_MODULE projection
#include <boost/test/unit_test.hpp>
