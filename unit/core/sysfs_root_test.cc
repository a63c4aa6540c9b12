#include "core/sysfs_root.h"

#include <boost/test/unit_test.hpp>

#include "unit/temp_tree.h"

namespace pcid {

BOOST_AUTO_TEST_SUITE(sysfs_root)

BOOST_AUTO_TEST_CASE(reads_files_links_and_directories) {
  testing::TempTree tree;
  tree.WriteFile("devices/a/vendor", "0x10de\n");
  tree.Symlink("devices/a/driver", "../../bus/pci/drivers/vfio-pci");
  tree.MakeDir("bus/pci/drivers/vfio-pci");
  tree.Symlink("devices/a/dangling", "../../nowhere/x");
  auto root = SysfsRoot::Open(tree.path());
  BOOST_REQUIRE(root.ok());
  BOOST_TEST(*root->ReadFile("devices/a/vendor") == "0x10de\n");
  BOOST_TEST(*root->ReadLinkBasename("devices/a/driver") == "vfio-pci");
  BOOST_TEST(*root->ReadLinkBasename("devices/a/dangling") == "x");  // as lspci reads it
  tree.Symlink("devices/a/dots", "../..");
  BOOST_TEST(absl::IsFailedPrecondition(root->ReadLinkBasename("devices/a/dots").status()));
  BOOST_TEST(absl::IsNotFound(root->ReadLinkBasename("devices/a/none").status()));
  auto dir = root->OpenDir("devices/a");
  BOOST_REQUIRE(dir.ok());
  BOOST_TEST(*dir->ReadFile("vendor") == "0x10de\n");
  auto names = dir->ListDir("");
  BOOST_REQUIRE(names.ok());
  BOOST_TEST(names->size() == 4u);
  BOOST_TEST(root->Exists("devices/a/vendor"));
  BOOST_TEST(!root->Exists("devices/a/dangling"));
}

BOOST_AUTO_TEST_CASE(refuses_paths_that_leave_the_root) {
  testing::TempTree tree;
  tree.WriteFile("inside/file", "x");
  auto root = SysfsRoot::Open(tree.path() + "/inside");
  BOOST_REQUIRE(root.ok());
  for (const char* bad : {"/etc/passwd", "../inside/file", "a/../../x", "..", "", "a/.."}) {
    BOOST_TEST(absl::IsInvalidArgument(root->ReadFile(bad).status()), bad);
    BOOST_TEST(!root->Exists(bad));
  }
  BOOST_TEST(root->ReadFile("file").ok());
  BOOST_TEST(root->ReadFile("..file").status().code() == absl::StatusCode::kNotFound);
}

BOOST_AUTO_TEST_CASE(errors_name_the_path) {
  testing::TempTree tree;
  auto root = SysfsRoot::Open(tree.path());
  BOOST_REQUIRE(root.ok());
  auto missing = root->ReadFile("bus/pci/devices/0000:00:01.0/vendor");
  BOOST_TEST(absl::IsNotFound(missing.status()));
  BOOST_TEST(std::string(missing.status().message())
                 .find(tree.path() + "/bus/pci/devices/0000:00:01.0/vendor") != std::string::npos);
  BOOST_TEST(!SysfsRoot::Open(tree.path() + "/nope").ok());
}

BOOST_AUTO_TEST_CASE(reads_at_most_one_page) {
  testing::TempTree tree;
  tree.WriteFile("big", std::string(10000, 'x'));
  auto root = SysfsRoot::Open(tree.path());
  BOOST_TEST(root->ReadFile("big")->size() == 4096u);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace pcid
