#include "core/mdev.h"

#include <boost/test/unit_test.hpp>
#include <set>

namespace pcid {

BOOST_AUTO_TEST_SUITE(mdev_names)

BOOST_AUTO_TEST_CASE(uuids_are_parsed_into_lower_case) {
  auto uuid = ParseUuid("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001");
  BOOST_REQUIRE(uuid.ok());
  BOOST_TEST(*uuid == "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
  for (const char* bad :
       {"", "83b8f4f2-509f-382f-3c1e-e6bfe0fa100", "83b8f4f2-509f-382f-3c1e-e6bfe0fa10011",
        "83b8f4f2_509f-382f-3c1e-e6bfe0fa1001", "83b8f4f2-509f-382f-3c1e-e6bfe0fa100g",
        "../../../../../../../../../../../../../", "83b8f4f2-509f-382f-3c1ee-6bfe0fa1001"}) {
    auto parsed = ParseUuid(bad);
    BOOST_TEST(!parsed.ok(), bad);
    BOOST_TEST(parsed.status().message().find("is not a UUID") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(random_uuids_are_version_4_and_differ) {
  std::set<std::string> seen;
  for (int i = 0; i < 64; ++i) {
    const std::string uuid = NewRandomUuid();
    auto parsed = ParseUuid(uuid);
    BOOST_REQUIRE(parsed.ok());
    BOOST_TEST(*parsed == uuid);  // already lower case
    BOOST_TEST(uuid[14] == '4');
    BOOST_TEST(std::string("89ab").find(uuid[19]) != std::string::npos);
    seen.insert(uuid);
  }
  BOOST_TEST(seen.size() == 64u);
}

BOOST_AUTO_TEST_CASE(path_components_are_checked) {
  for (const char* good : {"mtty", "mtty-2", "nvidia-746", "0000:08:01.7", "mbochs_small"}) {
    BOOST_TEST(IsMdevComponent(good), good);
  }
  for (const char* bad : {"", ".", "..", ".hidden", "a/b", "../mtty", "a b", "x\n",
                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
    BOOST_TEST(!IsMdevComponent(bad), bad);
  }
}

BOOST_AUTO_TEST_CASE(resource_names_follow_harvester_and_kubevirt) {
  auto name = [](const char* id, const char* type_name) {
    return MdevResourceName(MdevType{.id = id,
                                     .name = type_name,
                                     .description = "",
                                     .device_api = "vfio-pci",
                                     .available_instances = 1});
  };
  BOOST_TEST(name("nvidia-746", "NVIDIA A2-4Q") == "nvidia.com/NVIDIA_A2-4Q");
  BOOST_TEST(name("nvidia-222", "GRID T4-1Q") == "nvidia.com/GRID_T4-1Q");
  BOOST_TEST(name("nvidia-1", "  NVIDIA  A100/1g.5gb ") == "nvidia.com/NVIDIA_A100_1g_5gb");
  BOOST_TEST(name("mbochs-small", "mbochs-small") == "pcidevices.io/mbochs-small");
  BOOST_TEST(name("mtty-1", "Single port serial") == "pcidevices.io/Single_port_serial");
  BOOST_TEST(name("mtty-1", "(((") == "pcidevices.io/mtty-1");  // nothing usable: the id
  BOOST_TEST(name("x", std::string(100, 'a').c_str()) == "pcidevices.io/" + std::string(63, 'a'));
}

BOOST_AUTO_TEST_CASE(parent_from_the_mdevs_link) {
  const std::string uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
  BOOST_TEST(MdevParentOfLink("../../../devices/virtual/mtty/mtty/" + uuid, uuid).value_or("") ==
             "mtty");
  BOOST_TEST(MdevParentOfLink("../../../devices/pci0000:00/0000:08:01.7/" + uuid + "/", uuid)
                 .value_or("") == "0000:08:01.7");
  BOOST_TEST(!MdevParentOfLink("../../../devices/virtual/mtty/mtty/other", uuid).has_value());
  BOOST_TEST(!MdevParentOfLink(uuid, uuid).has_value());
  BOOST_TEST(!MdevParentOfLink("../../../devices/a b/" + uuid, uuid).has_value());
  BOOST_TEST(MdevResourceNameOfId("mtty-1") == "pcidevices.io/mtty-1");
  BOOST_TEST(MdevResourceNameOfId("nvidia-746") == "nvidia.com/nvidia-746");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
