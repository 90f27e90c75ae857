"""Peak resident memory of the current process, for the benchmarks' fresh-process cases.

Linux: ``VmHWM`` from /proc/self/status, which starts afresh at exec. ``ru_maxrss`` does not: on Linux a
spawned child's starts at its parent's peak (carried across fork + exec), so a benchmark whose parent had
trained a model or imported torch reported the parent's memory as the child's. Elsewhere ``ru_maxrss``
is the best there is.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
