// File: cmd/logging.h
//
// Creates the per-module spdlog loggers (all writing to stderr). Only cmd/ creates loggers; the
// modules receive them. Nothing is registered globally.
//
// Lines read "2026-12-06T22:52:57.950 info daemon: message" (UTC, milliseconds). Each is
// formatted on the logging thread's stack and written with one write(2), with no lock of ours:
// spdlog's console sinks hold one process-wide mutex across formatting and the write, and the
// daemon's owner thread waited behind other threads' lines (41 waits in the reconciler bench's
// start, up to 7 ms each, when the holder was preempted). The kernel keeps concurrent lines
// whole: a pipe write up to PIPE_BUF is atomic (a container's stderr is a pipe), a file's offset
// is locked per write. The format is fixed: set_pattern and set_formatter change nothing. A line
// that cannot be written (EPIPE, EBADF, EAGAIN) is dropped, as stderr_sink drops a failed fwrite.
#pragma once

#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace pcid::cmd {

// A logger for `module`, writing to stderr through MakeLineSink.
std::shared_ptr<spdlog::logger> MakeLogger(const std::string& module);

// The sink above, on `fd` (which stays the caller's).
std::shared_ptr<spdlog::sinks::sink> MakeLineSink(int fd);

}  // namespace pcid::cmd
