// File: cmd/logging.h
//
// Creates the per-module spdlog loggers (all writing to stderr). Only cmd/ creates loggers; the
// modules receive them. Nothing is registered globally.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace pcid::cmd {

std::shared_ptr<spdlog::logger> MakeLogger(const std::string& module);

}  // namespace pcid::cmd
