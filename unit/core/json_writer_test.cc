#include "core/json_writer.h"

#include <boost/test/unit_test.hpp>

#include "core/device.h"
#include "core/resource_json.h"

namespace pcid {

BOOST_AUTO_TEST_SUITE(json_writer)

BOOST_AUTO_TEST_CASE(compact_documents) {
  JsonWriter json;
  json.BeginObject()
      .Key("a")
      .Int(-1)
      .Key("b")
      .BeginArray()
      .Bool(true)
      .Null()
      .String("x")
      .EndArray()
      .Key("c")
      .BeginObject()
      .EndObject()
      .EndObject();
  BOOST_TEST(json.str() == R"({"a":-1,"b":[true,null,"x"],"c":{}})");
}

BOOST_AUTO_TEST_CASE(indented_documents) {
  JsonWriter json(2);
  json.BeginArray().BeginObject().Key("k").String("v").EndObject().EndArray();
  BOOST_TEST(json.str() == "[\n  {\n    \"k\": \"v\"\n  }\n]");
}

BOOST_AUTO_TEST_CASE(string_escaping) {
  std::string out;
  AppendJsonString(out, std::string_view("q\"b\\n\n\t\x01\x7f\0", 10));
  BOOST_TEST(out == R"("q\"b\\n\n\t\u0001\u007f\u0000")");
  out.clear();
  AppendJsonString(out, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");  // valid UTF-8 kept
  BOOST_TEST(out == "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  out.clear();
  // Invalid: lone continuation, overlong '/', truncated sequence, surrogate.
  AppendJsonString(out, "\x80|\xc0\xaf|\xe2\x82|\xed\xa0\x80");
  BOOST_TEST(out == R"("\ufffd|\ufffd\ufffd|\ufffd\ufffd|\ufffd\ufffd\ufffd")");
}

BOOST_AUTO_TEST_CASE(pci_device_object_shape) {
  PciDevice dev;
  dev.address = *ParsePciAddress("0000:01:00.0");
  dev.vendor_id = 0x10de;
  dev.device_id = 0x1c02;
  dev.class_code = 0x03;
  dev.names = DeviceNames{"NVIDIA Corporation", "GP106 [GeForce GTX 1060 3GB]",
                          "Display controller", "VGA compatible controller"};
  dev.iommu_group = 12;
  dev.numa_node = 1;
  dev.driver = "vfio-pci";
  JsonWriter json;
  WritePciDeviceObject(json, dev, "node1");
  BOOST_TEST(
      json.str() ==
      R"({"apiVersion":"devices.harvesterhci.io/v1beta1","kind":"PCIDevice",)"
      R"("metadata":{"name":"node1-000001000","labels":{"nodename":"node1"}},)"
      R"("status":{"address":"0000:01:00.0","vendorId":"10de","deviceId":"1c02",)"
      R"("classId":"0300","iommuGroup":"12","nodeName":"node1",)"
      R"("resourceName":"nvidia.com/GP106_GEFORCE_GTX_1060_3GB",)"
      R"("description":"VGA compatible controller: NVIDIA Corporation GP106 [GeForce GTX 1060 3GB]",)"
      R"("kernelDriverInUse":"vfio-pci","numaNode":1}})");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
