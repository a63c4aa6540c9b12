#define BOOST_TEST_MODULE udev_test
#include <boost/test/unit_test.hpp>
