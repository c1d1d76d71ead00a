"""The busy-machine warning every timing benchmark prints under its figures."""
from __future__ import annotations

import os


def warn_if_busy(*load_averages: float) -> None:
    """Print the warning when any 1-minute load average sampled around the timings exceeds the core count:
    other processes then took cores from the timed work, and its figures say little."""
    if max(load_averages) > (os.cpu_count() or 1):
        print("WARNING: the machine was busy (load average above the core count): figures are unreliable")
