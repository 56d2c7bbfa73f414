"""How many CPUs this process may use: the default number of worker processes.

`os.cpu_count()` counts the machine's cores. A gateway pinned to one core (`taskset -c 0`) or run
in a container with a CPU limit (`docker run --cpus 2`, a Kubernetes `limits.cpu`) would start a
worker per core of the host, all sharing what it was given: each worker then wakes for fewer
messages at a time, and a stream that lands on another worker than its webhook's is relayed
between them. So the default counts what the process may actually run on:

* its CPU affinity (`os.sched_getaffinity`: taskset, cpusets);
* capped by its cgroup's CPU quota, rounded up (cgroup v2 `cpu.max` of the process's cgroup and
  its ancestors, or cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`); no quota, no cap.

Anything unreadable counts as no limit: this only sizes a default.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cpus", "cpus_for", "cgroup_cpu_limit"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _quota(quota: str, period: str) -> float | None:
    """CPUs a quota over a period allows; None for no limit ("max", -1) or a value that is not one."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _v2_limit(root: Path, path: str) -> float | None:
    """The tightest `cpu.max` from the process's cgroup up to the root of the hierarchy."""
    best: float | None = None
    here = (root / path.lstrip("/")).resolve()
    top = root.resolve()
    while True:
        text = _read(here / "cpu.max")
        if text is not None:
            parts = text.split()
            limit = _quota(parts[0], parts[1]) if len(parts) == 2 else None
            if limit is not None and (best is None or limit < best):
                best = limit
        if here == top or top not in here.parents:
            return best
        here = here.parent


def _v1_limit(root: Path, controllers: str, path: str) -> float | None:
    for mount in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for where in (root / mount / path.lstrip("/"), root / mount):  # the own cgroup, or the namespace's root
            quota, period = _read(where / "cpu.cfs_quota_us"), _read(where / "cpu.cfs_period_us")
            if quota is not None and period is not None:
                return _quota(quota, period)
    return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup, in CPUs (1.5 for `--cpus 1.5`), or None for none."""
    text = _read(proc_cgroup)
    if text is None:
        return None
    v1: float | None = None
    for line in text.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":  # the unified (v2) hierarchy
            limit = _v2_limit(root / "unified", path) if (root / "unified").is_dir() else None
            if limit is None:
                limit = _v2_limit(root, path)
            if limit is not None:
                return limit
        elif "cpu" in controllers.split(","):
            v1 = _v1_limit(root, controllers, path)
    return v1


def cpus_for(affinity: set[int], quota: float | None) -> int:
    """CPUs a process with this affinity and cgroup quota (None: none) may use, at least 1."""
    n = len(affinity) or 1
    if quota is not None and quota > 0:
        n = min(n, math.ceil(quota - 1e-9))  # 1.5 CPUs of quota keep two workers busy
    return max(1, n)


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by its cgroup's CPU quota."""
    try:
        affinity = os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not on Linux
        affinity = set(range(os.cpu_count() or 1))
    return cpus_for(affinity, cgroup_cpu_limit())
