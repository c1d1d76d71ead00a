"""This process's resident memory: now, its high-water mark, and that mark reset at the start of a step.

A step's peak (a study unit, a `bench memory` step) is VmHWM read after the step with the mark reset at its
start (5 written to /proc/self/clear_refs, Linux >= 4.0), so it counts what is resident when the step starts
plus what the step adds. Children (converter or measurement processes) are not in it: `children_peak_bytes`
is the largest of those this process has waited for.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path

#: ru_maxrss is in KiB on Linux, bytes on macOS.
_RU_SCALE = 1 if sys.platform == "darwin" else 1024


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def vm_hwm_bytes() -> int:
    """The process's resident high-water mark: VmHWM on Linux, the mark of the address space exec created;
    elsewhere ru_maxrss. Not ru_maxrss on Linux: it carries the forked parent's mark across execve, so a
    child of a parent holding two models would report the parent's memory."""
    hwm = _status_bytes("VmHWM:")
    return hwm if hwm is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * _RU_SCALE


def vm_rss_bytes() -> int:
    """Resident memory now (VmRSS); 0 where /proc is absent."""
    return _status_bytes("VmRSS:") or 0


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: 5 written to /proc/self/clear_refs); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def children_peak_bytes() -> int:
    """The largest resident high-water mark among the child processes this process has waited for (ru_maxrss
    of RUSAGE_CHILDREN; it cannot be reset, so a step's children peaked above it only if it rose)."""
    return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * _RU_SCALE
