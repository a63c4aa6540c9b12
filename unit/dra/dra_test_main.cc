#define BOOST_TEST_MODULE dra
#include <boost/test/unit_test.hpp>
