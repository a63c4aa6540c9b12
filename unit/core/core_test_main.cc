#define BOOST_TEST_MODULE core_test
#include <boost/test/unit_test.hpp>
