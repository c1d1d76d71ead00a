"""This process's resident memory: now, its high-water mark, and that mark reset at the start of a step.

A step's peak (a study unit, a `bench memory` step) is VmHWM read after the step with the mark reset at its
start (5 written to /proc/self/clear_refs, Linux >= 4.0), so it counts what is resident when the step starts
plus what the step adds. Children (converter or measurement processes) are not in it: `children_peak_bytes`
bounds those this process has waited for from above.
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
    """Reset VmHWM to the current RSS (Linux >= 4.0: 5 written to /proc/self/clear_refs); False if refused.

    The earlier mark is gone for good: the kernel reads the mark at exit for ru_maxrss, so `/usr/bin/time -v`
    on a process that resets reports its peak since the last reset, not its whole life."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def children_peak_bytes() -> int:
    """An upper bound of the resident high-water marks of the child processes this process has waited for
    (ru_maxrss of RUSAGE_CHILDREN; it cannot be reset, so a step's children peaked above it only if it rose).

    Not a child's own peak on Linux: execve keeps the mark of the address space the child was forked (or
    vforked) with, so a child counts this process's memory when it was started (a measured case: docs/study.md,
    "Each unit's peak memory"). The measurement's timing workers report their own VmHWM in their results."""
    return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * _RU_SCALE
