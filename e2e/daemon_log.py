"""What an e2e test prints of a daemon's log when it fails.

The tail shows what the daemon was doing; a sanitizer's report (ThreadSanitizer, AddressSanitizer,
UBSan) is printed whole wherever it sits, because the tail alone loses it behind the stop's lines.
"""
import re

_REPORT_START = re.compile(r"^(WARNING: ThreadSanitizer|==\d+==ERROR: AddressSanitizer|.*runtime error: )")
_REPORT_END = re.compile(r"^(==================|SUMMARY: )")


def sanitizer_reports(text):
    """The sanitizer reports in a log, each from its first line to its closing line."""
    reports, current = [], None
    for line in text.splitlines():
        if current is None and _REPORT_START.match(line):
            current = [line]
        elif current is not None:
            current.append(line)
        if current is not None and _REPORT_END.match(line) and len(current) > 1:
            reports.append("\n".join(current))
            current = None
    if current is not None:
        reports.append("\n".join(current))
    return reports


def failure_text(text, tail_lines=60):
    """The log's sanitizer reports, then its last lines."""
    parts = [f"--- sanitizer report ---\n{r}" for r in sanitizer_reports(text)]
    parts.append("--- daemon log (tail) ---\n" + "\n".join(text.splitlines()[-tail_lines:]))
    return "\n".join(parts)


_OWNER_LOOP = re.compile(r"owner loop: (\d+) handlers, longest ([0-9.]+) ms \(([^)]+)\), "
                         r"longest on the CPU ([0-9.]+) ms \(([^)]+)\)")


def owner_loop_figures(text):
    """The owner loop's own figures, logged at exit: (handlers, longest wall ms, its handler,
    longest CPU ms, its handler), or None."""
    m = _OWNER_LOOP.search(text)
    if not m:
        return None
    return int(m.group(1)), float(m.group(2)), m.group(3), float(m.group(4)), m.group(5)
