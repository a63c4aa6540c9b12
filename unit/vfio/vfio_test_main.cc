#define BOOST_TEST_MODULE vfio
#include <boost/test/unit_test.hpp>
