// File: unit/temp_tree.h
//
// A temporary directory tree for tests (sysfs-shaped fixtures). Removed on destruction.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace pcid::testing {

class TempTree {
 public:
  TempTree() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pcid-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    root_ = tmpl;
  }
  ~TempTree() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  TempTree(const TempTree&) = delete;
  TempTree& operator=(const TempTree&) = delete;

  const std::filesystem::path& root() const { return root_; }
  std::string path() const { return root_.string(); }

  void WriteFile(const std::string& rel, const std::string& contents) const {
    const auto p = root_ / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << contents;
  }
  void MakeDir(const std::string& rel) const { std::filesystem::create_directories(root_ / rel); }
  void Symlink(const std::string& rel, const std::string& target) const {
    const auto p = root_ / rel;
    std::filesystem::create_directories(p.parent_path());
    std::filesystem::create_directory_symlink(target, p);
  }

 private:
  std::filesystem::path root_;
};

}  // namespace pcid::testing
