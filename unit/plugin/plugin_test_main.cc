#define BOOST_TEST_MODULE plugin_test
#include <boost/test/unit_test.hpp>
