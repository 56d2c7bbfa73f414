"""The default number of workers: the CPUs the process may use, not the host's cores.

A gateway pinned to one core, or in a container limited to 2 CPUs on a 64-core node, must not
start a worker per core of the host (voicegw/cpus.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicegw.cpus import cgroup_cpu_limit, cpus_for, usable_cpus

ROOT = Path(__file__).resolve().parent.parent


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def test_cgroup_v2_quota_is_the_tightest_from_the_process_cgroup_up(tmp_path: Path) -> None:
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/kubepods/pod1/ctr\n")
    root = tmp_path / "cg"
    _tree(root, {"cpu.max": "max 100000", "kubepods/pod1/ctr/cpu.max": "150000 100000",
                 "kubepods/pod1/cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.5
    _tree(root, {"kubepods/pod1/cpu.max": "100000 100000"})  # the pod's limit is tighter than the container's
    assert cgroup_cpu_limit(root, proc) == 1.0
    _tree(root, {"kubepods/pod1/cpu.max": "max 100000", "kubepods/pod1/ctr/cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None


def test_cgroup_v1_quota_of_the_own_cgroup_or_the_namespace_root(tmp_path: Path) -> None:
    proc = tmp_path / "proc_cgroup"
    proc.write_text("5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    root = tmp_path / "cg"
    _tree(root, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000",
                 "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_limit(root, proc) == 2.0
    _tree(root, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1"})
    assert cgroup_cpu_limit(root, proc) is None
    # inside the container's cgroup namespace the own cgroup is the mount's root
    proc.write_text("4:cpu,cpuacct:/\n")
    _tree(root, {"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_limit(root, proc) == 0.5


def test_unreadable_or_malformed_cgroups_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path, tmp_path / "missing") is None
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/a\n")
    _tree(tmp_path / "cg", {"a/cpu.max": "lots 100000"})
    assert cgroup_cpu_limit(tmp_path / "cg", proc) is None


@pytest.mark.parametrize(("affinity", "quota", "expected"), [
    ({0, 1, 2, 3}, None, 4),
    ({0}, None, 1),  # taskset -c 0
    ({0, 1, 2, 3}, 1.5, 2),  # --cpus 1.5 keeps two workers busy
    ({0, 1, 2, 3}, 2.0, 2),
    ({0, 1}, 8.0, 2),  # a quota above the affinity does not add CPUs
    ({0, 1, 2, 3}, 0.25, 1),
    (set(), None, 1),
])
def test_cpus_for(affinity: set[int], quota: float | None, expected: int) -> None:
    assert cpus_for(affinity, quota) == expected


def test_this_machine() -> None:
    n = usable_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def _default_workers(cpus: set[int]) -> int:
    code = ("import os, json; os.sched_setaffinity(0, %r); from voicegw.config import Settings; "
            "print(json.dumps(Settings.from_env({}).workers))" % (cpus,))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return int(json.loads(out.stdout))


def test_a_gateway_pinned_to_one_core_defaults_to_one_worker() -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.fail("this test needs a machine with two cores or more (it pins a process to one of them)")
    assert _default_workers({cores[0]}) == 1
    assert _default_workers(set(cores[:2])) == min(2, usable_cpus())
