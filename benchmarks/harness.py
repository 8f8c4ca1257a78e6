"""What the benchmark scripts share: paths, a private ROS domain, result files named by one rule.

Run the scripts as modules from the repository root (`python -m benchmarks <name> ...` or
`python -m benchmarks.<name> ...`): the source tree is then importable and this module puts the test
helpers the benchmarks reuse (test/ros_harness.py: nodes in their own processes; synthetic_ckpt.py:
released-layout weights; shutdown_harness.py, fake_camera.py) on the path, in this one place.

Results: `result_path("soak")` -> benchmarks/results/soak_<machine>_<YYYY-MM-DD_HHMM>.json
(benchmarks/results/README.md); the machine is $LSEG_BENCH_MACHINE or the host name.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEST = ROOT / "test"
if str(TEST) not in sys.path:
    sys.path.append(str(TEST))

from ros_harness import claim_domain_id  # noqa: E402  (the tests' claim: runs never share a domain)


def machine() -> str:
    """The machine's name in result files: $LSEG_BENCH_MACHINE, else the host name ([a-z0-9-] only)."""
    name = os.environ.get("LSEG_BENCH_MACHINE") or socket.gethostname().split(".")[0]
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "machine"


def stamp(when: Optional[datetime.datetime] = None) -> str:
    return (when or datetime.datetime.now()).strftime("%Y-%m-%d_%H%M")


def result_path(benchmark: str, suffix: str = ".json", out_dir: Optional[Path] = None,
                when: Optional[datetime.datetime] = None) -> Path:
    """<out_dir or benchmarks/results>/<benchmark>_<machine>_<YYYY-MM-DD_HHMM><suffix>."""
    return Path(out_dir or RESULTS) / f"{benchmark}_{machine()}_{stamp(when)}{suffix}"


def write_json(path: Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))
    print(f"wrote {path}", flush=True)
    return path


def child_env(domain: int, **extra: str) -> Dict[str, str]:
    """Environment for the ROS processes a benchmark starts: its domain, the source tree importable,
    no model hub, unbuffered output, idle OpenMP threads asleep (a shared CPU)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(extra)
    return env


@contextlib.contextmanager
def ros_domain(requested: Optional[int] = None, **extra_env: str) -> Iterator[Tuple[int, Dict[str, str], Any]]:
    """(domain id, child environment, rclpy context on that domain) for one benchmark run.

    The domain is claimed like the tests' (a lock file per id), so a benchmark never meets another
    run's nodes; `requested` (a script's --domain) is used as given."""
    import rclpy
    from rclpy.context import Context

    lock = None
    if requested is None:
        requested, lock = claim_domain_id()
    ctx = Context()
    rclpy.init(context=ctx, domain_id=requested)
    try:
        yield requested, child_env(requested, **extra_env), ctx
    finally:
        rclpy.try_shutdown(context=ctx)
        if lock is not None:
            lock.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
