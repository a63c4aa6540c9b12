#include "cmd/logging.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iterator>
#include <string_view>

#include "core/write_all.h"

namespace pcid::cmd {
namespace {

void FormatLine(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& out) {
  using namespace std::chrono;
  // The calendar from the time point itself: localtime_r and gmtime_r take glibc's time-zone
  // lock.
  const auto day = floor<days>(msg.time);
  const year_month_day date{day};
  const hh_mm_ss time{floor<milliseconds>(msg.time - day)};
  fmt::format_to(std::back_inserter(out),
                 "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03} {} {}: ", static_cast<int>(date.year()),
                 static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                 time.hours().count(), time.minutes().count(), time.seconds().count(),
                 time.subseconds().count(), spdlog::level::to_string_view(msg.level),
                 msg.logger_name);
  out.append(msg.payload.begin(), msg.payload.end());
  out.push_back('\n');
}

class LineSink final : public spdlog::sinks::sink {
 public:
  explicit LineSink(int fd) : fd_(fd) {}
  void log(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    FormatLine(msg, line);
    WriteAll(fd_, std::string_view(line.data(), line.size()));  // what cannot be written is dropped
  }
  void flush() override {}  // nothing is buffered
  void set_pattern(const std::string&) override {}
  void set_formatter(std::unique_ptr<spdlog::formatter>) override {}

 private:
  const int fd_;
};

}  // namespace

std::shared_ptr<spdlog::sinks::sink> MakeLineSink(int fd) { return std::make_shared<LineSink>(fd); }

std::shared_ptr<spdlog::logger> MakeLogger(const std::string& module) {
  auto logger = std::make_shared<spdlog::logger>(module, MakeLineSink(STDERR_FILENO));
  // PCIDEVICES_LOG_LEVEL=debug|info|warn|error|off tunes verbosity.
  const char* level = std::getenv("PCIDEVICES_LOG_LEVEL");
  logger->set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
  return logger;
}

}  // namespace pcid::cmd
