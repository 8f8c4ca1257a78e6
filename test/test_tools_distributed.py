"""lseg-train and lseg-evaluate under a real ``torchrun`` (gloo, CPU, the tiny ViT, 9 coloured-shapes images).

9 images in global batches of 4 give parts of 2+2, 2+2 and 1+0 per epoch: uneven ranks and an empty part.
The two-process run is compared with one process over the same global batches. They agree to float
rounding, not bitwise: besides the order of the gradient sums, one process normalises with PyTorch's
BatchNorm and several with batch norm synced across ranks (float64 statistics); at the tiny model's 2x2
coarsest maps a few channels are nearly constant and those roundings grow over the steps. Seen when this
was written: loss per step within 2e-5 (relative) over 9 steps, weights within 3e-5 (with the same batch
norm arithmetic in one process: 2.4e-7 after 3 steps).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("lseg_ros.model")
from lseg_ros.model import LSegConfig, LSegNet, save_own  # noqa: E402
from lseg_ros.tools import evaluate, train  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tools_synth import make_shapes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(TORCHRUN is None, reason=f"no torchrun next to {sys.executable}")
STEP = re.compile(r"iteration (\d+): loss ([-+.e0-9]+|nan|inf)")
LOSS_RTOL, WEIGHT_ATOL = 2e-4, 3e-4


def training_args(data, out, epochs=3):
    return ["--data", str(data), "--config", "tiny_vit", "--crop-size", "64", "--batch-size", "4",
            "--epochs", str(epochs), "--base-lr", "0.01", "-v", "-o", str(out)]


def env():
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def torchrun(launch, module, args, **popen):
    """``torchrun LAUNCH -m MODULE ARGS`` from the repository root; a Popen (output in .stdout)."""
    return subprocess.Popen([TORCHRUN, *launch, "-m", module, *args], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def history(run):
    return json.loads((run / "history.json").read_text())


def wait_for_epochs(run, n, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(history(run)) >= n:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    raise AssertionError(f"{run}: no epoch {n} within {timeout} s")


def weights(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def assert_same_weights(a, b):
    """Same file layout (keys, shapes, dtypes, metadata: no DDP 'module.' prefix); values to rounding."""
    (wa, ma), (wb, mb) = weights(a), weights(b)
    assert ma == mb and wa.keys() == wb.keys()
    assert all(wa[k].shape == wb[k].shape and wa[k].dtype == wb[k].dtype for k in wa)
    worst = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)
    print(f"weights: max |diff| {worst:.2e}")
    assert worst < WEIGHT_ATOL


def descendant_with_env(root_pid, marker: bytes) -> int:
    """The process below ``root_pid`` whose environment holds ``marker`` (e.g. b"RANK=1")."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    for pid in parents:
        p = pid
        while p in parents and p != root_pid:
            p = parents[p]
        if p == root_pid and pid != root_pid:
            try:
                if marker in (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"):
                    return pid
            except OSError:
                pass
    raise AssertionError(f"no process with {marker!r} under {root_pid}")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes") / "d", 9)


@pytest.fixture(scope="module")
def two_process_run(shapes, tmp_path_factory):
    """An uninterrupted 3-epoch run in 2 processes: (run folder, loss per iteration)."""
    run = tmp_path_factory.mktemp("two") / "run"
    rc, out = finish(torchrun(["--standalone", "--nproc_per_node", "2"], "lseg_ros.tools.train",
                              training_args(shapes, run)))
    assert rc == 0, out[-4000:]
    steps = {int(i): float(v) for i, v in STEP.findall(out)}
    assert sorted(steps) == list(range(1, 10)), out[-3000:]        # logged once (rank 0), every step
    return run, steps


def test_two_processes_train_as_one(shapes, two_process_run, tmp_path, caplog):
    two, two_steps = two_process_run
    one = tmp_path / "one"
    caplog.set_level("DEBUG", logger="lseg_ros.tools.train")
    assert train.main(training_args(shapes, one)) == 0
    one_steps = {int(i): float(v) for i, v in STEP.findall(caplog.text)}
    assert sorted(one_steps) == sorted(two_steps)
    for i in one_steps:
        print(f"iteration {i}: loss {one_steps[i]:.7f} (1 process) {two_steps[i]:.7f} (2 processes)")
        assert two_steps[i] == pytest.approx(one_steps[i], rel=LOSS_RTOL)
    h1, h2 = history(one), history(two)
    assert [r["world_size"] for r in h1] == [1] * 3 and [r["world_size"] for r in h2] == [2] * 3
    assert [r["train_rank_samples"] for r in h1] == [[9]] * 3
    assert [r["train_rank_samples"] for r in h2] == [[5, 4]] * 3          # (2+2+1, 2+2+0)
    assert [r["iteration"] for r in h2] == [r["iteration"] for r in h1] == [3, 6, 9]
    assert_same_weights(one / "last.safetensors", two / "last.safetensors")
    # rank 0 alone wrote the run folder, and only the finished files
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir()) == [
        "best.safetensors", "curves.png", "history.json", "last.safetensors", "last.state.pt"]


def test_a_dead_rank_stops_the_run_which_resumes_in_one_process(shapes, two_process_run, tmp_path):
    """Rank 1 killed in the second epoch (as the kernel's OOM killer would): torchrun stops rank 0 at once
    and names the rank that died; the run then resumes in one process and ends where the uninterrupted
    two-process run ends."""
    two, _ = two_process_run
    cut = tmp_path / "cut"
    proc = torchrun(["--standalone", "--nproc_per_node", "2"], "lseg_ros.tools.train", training_args(shapes, cut))
    wait_for_epochs(cut, 1, proc)
    t0 = time.monotonic()
    os.kill(descendant_with_env(proc.pid, b"RANK=1"), signal.SIGKILL)
    rc, out = finish(proc, 120)
    print(f"stopped {time.monotonic() - t0:.1f} s after the kill")
    assert rc != 0 and time.monotonic() - t0 < 60
    root_cause = out[out.index("Root Cause"):]
    assert re.search(r"rank\s*: 1 ", root_cause) and "SIGKILL" in root_cause, out[-3000:]
    stopped_at = len(history(cut))
    print(f"stopped after epoch {stopped_at}")
    assert stopped_at < 3, "the run finished before it was stopped"

    assert train.main(["--resume", str(cut)]) == 0          # one process, the same global batch
    h, ref = history(cut), history(two)
    assert [r["world_size"] for r in h] == [2] * stopped_at + [1] * (3 - stopped_at)
    for a, b in zip(h, ref):
        assert a["iteration"] == b["iteration"]
        assert a["loss"] == pytest.approx(b["loss"], rel=LOSS_RTOL)
    assert_same_weights(cut / "last.safetensors", two / "last.safetensors")


def test_sharded_evaluation_equals_unsharded(shapes, tmp_path):
    torch.manual_seed(3)
    w = save_own(LSegNet.from_config(LSegConfig.tiny_vit()), tmp_path / "w.safetensors")
    common = ["--data", str(shapes), "-w", str(w)]
    assert evaluate.main(common + ["-o", str(tmp_path / "one")]) == 0
    rc, out = finish(torchrun(["--standalone", "--nproc_per_node", "2"], "lseg_ros.tools.evaluate",
                              common + ["-o", str(tmp_path / "two")]))
    assert rc == 0, out[-4000:]
    assert out.count("mIoU") == 1                           # rank 0 alone prints the table
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert (one.pop("world_size"), two.pop("world_size")) == (1, 2)
    assert one == two                                       # confusion matrix, IoUs: exactly
    assert two["images"] == 9 and 0 < two["miou"] < 1 and len(set(map(tuple, two["confusion_matrix"]))) > 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_rank_on_another_machine_stops_the_others(shapes, tmp_path):
    """Two torchrun agents (--nnodes 2, as on two machines), rank 1 killed: rank 0 sees its connection
    to rank 1 drop and stops with a message naming itself and the cause, without waiting for a timeout."""
    port = str(free_port())
    run = tmp_path / "two_machines"
    launch = ["--nnodes", "2", "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port]
    node0 = torchrun(launch + ["--node_rank", "0"], "lseg_ros.tools.train", training_args(shapes, run, epochs=50))
    node1 = torchrun(launch + ["--node_rank", "1"], "lseg_ros.tools.train", training_args(shapes, run, epochs=50))
    try:
        wait_for_epochs(run, 1, node0)
        t0 = time.monotonic()
        os.kill(descendant_with_env(node1.pid, b"RANK=1"), signal.SIGKILL)
        rc, out = finish(node0, 120)
        print(f"rank 0 stopped {time.monotonic() - t0:.1f} s after the kill:", out.split("error: ")[-1][:300])
        assert rc != 0 and time.monotonic() - t0 < 60
        assert "error: rank 0 of 2 stopped: " in out, out[-3000:]
        assert "Connection" in out.split("rank 0 of 2 stopped: ")[1].splitlines()[0]
    finally:
        for p in (node0, node1):
            if p.poll() is None:
                p.kill()
            p.communicate()


def test_data_parallel_wraps_the_image_path_only(tmp_path):
    """Inside a (one-process, gloo) group: DDP holds the backbone and decoder, not the frozen text tower
    (neither broadcast nor bucketed), and every BatchNorm2d is the synced one, same tensors."""
    import torch.distributed as dist

    from lseg_ros.tools import distributed
    from lseg_ros.tools.train_setup import param_groups

    net = LSegNet.from_config(LSegConfig.tiny_vit())
    param_groups(net, 0.01, 10)
    bn = net.scratch.refinenet1.resConfUnit2.bn1
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = distributed.data_parallel(net, distributed.Ranks(launched=True))
        names = [n for n, _ in ddp.module.named_parameters()]
        assert names and not any(n.startswith("text.") for n in names)
        assert {n.split(".")[0] for n in names} == {"pretrained", "scratch"}
        synced = net.scratch.refinenet1.resConfUnit2.bn1
        assert isinstance(synced, distributed.CpuSyncBatchNorm) and synced.weight is bn.weight
        assert not any(type(m) is torch.nn.BatchNorm2d for m in net.modules())
        assert ddp(torch.randn(2, 3, 64, 64), torch.randn(3, 32)).shape == (2, 3, 64, 64)
    finally:
        dist.destroy_process_group()
