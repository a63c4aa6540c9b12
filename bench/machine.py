"""The machine a latency bench runs on, in one line printed beside its figures: CPUs, load, and
what bench/machine_costs.cc measures (a system call, a thread hand-off, a fixed loop). Budgets of
a few milliseconds are made of hundreds of system calls and several hand-offs between threads:
the same code meets them or not depending on these costs, so every report carries them."""
import json
import os
import subprocess


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def costs(build: str) -> dict | None:
    """machine_costs' figures, or None when the binary is missing or fails (the bench goes on)."""
    path = os.path.join(build, "bench", "machine_costs")
    try:
        out = subprocess.run([path], capture_output=True, text=True, timeout=60, check=True).stdout
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def line(build: str) -> str:
    text = f"machine: {os.cpu_count()} CPUs, load average {load_average()}"
    c = costs(build)
    if c is None:
        return text + f" (no {build}/bench/machine_costs: system-call and hand-off costs unknown)"
    return (text + f"; a system call {c['syscall_us']:.2f} us, a thread hand-off round trip "
            f"p50 {c['handoff_p50_us']:.0f} us / p99 {c['handoff_p99_us']:.0f} us, the fixed loop "
            f"{c['cpu_loop_ms']:.1f} ms (bare metal: a system call typically 0.1-0.3 us)")
