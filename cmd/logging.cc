#include "cmd/logging.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>

namespace pcid::cmd {

std::shared_ptr<spdlog::logger> MakeLogger(const std::string& module) {
  auto logger =
      std::make_shared<spdlog::logger>(module, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %n: %v");
  // PCIDEVICES_LOG_LEVEL=debug|info|warn|error|off tunes verbosity.
  const char* level = std::getenv("PCIDEVICES_LOG_LEVEL");
  logger->set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
  return logger;
}

}  // namespace pcid::cmd
