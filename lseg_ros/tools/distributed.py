"""Several processes for ``lseg-train`` and ``lseg-evaluate``, on PyTorch's own distributed stack.

Launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; any launcher that sets them works), a tool joins the process group: NCCL when its
device is CUDA (each process takes the GPU of its ``LOCAL_RANK``), gloo on the CPU. Without those
variables nothing here starts a process group and a tool runs as one process.

* ``GlobalBatchSampler``: a rank's share of every global batch. The global batches are those of
  one process (the same permutation for a seed and epoch), so what a run trains on does not depend on
  the number of processes, and a run resumes with another one.
* ``all_sum`` / ``all_gather``: confusion matrices, loss sums and sample counts across ranks.
* ``sync_batchnorm``: batch statistics over the global batch, as the reference trained (SyncBN):
  PyTorch's ``SyncBatchNorm`` on CUDA; on the CPU, where it does not run, ``CpuSyncBatchNorm``.
* ``data_parallel``: DDP over the image path only; the frozen text tower is neither broadcast nor
  bucketed (the training loop uses its label embeddings, computed once).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lseg_ros.tools.common import ToolError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    launched: bool = False          # started by torchrun: the process group is up

    @property
    def main(self) -> bool:
        """Rank 0: the one that prints, logs progress and writes files."""
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"


def _env_int(name: str, default: str | None = None) -> int:
    try:
        return int(os.environ[name] if default is None else os.environ.get(name, default))
    except ValueError:
        raise ToolError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None


def launched() -> bool:
    """True under torchrun (or a launcher that sets RANK and WORLD_SIZE the same way)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    """The number of processes of this run (1 without torchrun), known before the group is joined."""
    return _env_int("WORLD_SIZE") if launched() else 1


def start(device: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Ranks:
    """Resolve the device and, under torchrun, join the process group (NCCL on CUDA, gloo on the CPU).

    ``device``: "cpu" (default) or "cuda"; under torchrun a CUDA process takes the GPU of its LOCAL_RANK.
    ``timeout_s``: how long a collective waits for a rank that neither answers nor fails."""
    from lseg_ros.model.devices import resolve_device

    try:
        dev = resolve_device(device or "cpu")
    except ValueError as e:
        raise ToolError(str(e)) from None
    if not launched():
        return Ranks(device=dev)
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK", "0")
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ToolError(f"LOCAL_RANK {local} but {torch.cuda.device_count()} GPU(s) visible: start at most "
                            "that many processes per machine (--nproc_per_node)")
        if dev.index is not None and dev.index != local:
            log.info("--device %s: under torchrun process %d uses cuda:%d", device, local, local)
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    ranks = Ranks(rank, world, local, dev, launched=True)
    dist.init_process_group(ranks.backend, timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=dev if dev.type == "cuda" else None)
    if not ranks.main:      # one voice: rank 0 logs progress, the others only what goes wrong
        logging.getLogger().setLevel(logging.WARNING)
    log.info("process group: %d processes, %s, %s", world, ranks.backend, dev)
    return ranks


@contextlib.contextmanager
def session(device: str | None, timeout_s: float = DEFAULT_TIMEOUT_S):
    """``start`` ... leave the group. A failure of a collective (a rank that died or stopped answering)
    becomes a ``ToolError`` that names this rank, so the survivors stop with a message, not a hang."""
    ranks = start(device, timeout_s)
    try:
        yield ranks
        if ranks.launched and ranks.world_size > 1:
            # Leave together: a rank that tore its group down while another was still writing ended in
            # gloo's teardown with SIGABRT ("terminate called without an active exception") on a loaded machine.
            dist.barrier()
    except RuntimeError as e:
        if not ranks.launched or ranks.world_size == 1:
            raise
        log.debug("rank %d failed", ranks.rank, exc_info=True)      # the traceback, with -v
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ToolError(f"rank {ranks.rank} of {ranks.world_size} stopped: {type(e).__name__}: {first[:400]} "
                        "(when one rank fails the others fail next: the first failure torchrun lists is the "
                        "cause)") from None
    finally:
        if ranks.launched and dist.is_initialized():
            dist.destroy_process_group()


# ---- data ---------------------------------------------------------------------------------
def shard(items: list | range, ranks: Ranks):
    """This rank's items: every world_size-th, from the rank's own index on (evaluation: each item is
    scored by one rank)."""
    return items[ranks.rank::ranks.world_size]


class GlobalBatchSampler(torch.utils.data.Sampler):
    """This rank's share of each global batch of ``global_batch`` samples (``batch_sampler`` of a
    DataLoader). With a ``generator`` the order is ``torch.randperm(n, generator)`` drawn when
    iteration starts, after the DataLoader's own draw from that generator: exactly the order of a
    one-process ``DataLoader(shuffle=True, generator=...)``, so runs made before sharding repeat.
    A global batch is split into contiguous parts whose sizes differ by one at most; a short last
    batch can leave a rank an empty part (its collate makes an empty batch: every rank still steps)."""

    def __init__(self, n: int, global_batch: int, ranks: Ranks | None = None, generator=None) -> None:
        self.n, self.batch, self.generator = n, global_batch, generator
        self.rank, self.world = (ranks.rank, ranks.world_size) if ranks else (0, 1)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch)

    def __iter__(self):
        order = (torch.randperm(self.n, generator=self.generator) if self.generator is not None
                 else torch.arange(self.n)).tolist()
        for start in range(0, self.n, self.batch):
            yield np.array_split(order[start:start + self.batch], self.world)[self.rank].tolist()


# ---- reductions ---------------------------------------------------------------------------
def all_sum(values, ranks: Ranks):
    """Elementwise sum over ranks of a numpy array or tensor (the same type back; as is in one process)."""
    if not ranks.launched:
        return values
    t = torch.as_tensor(values).to(ranks.device if ranks.backend == "nccl" else "cpu").clone()
    dist.all_reduce(t)
    return t.cpu().numpy() if isinstance(values, np.ndarray) else t.to(torch.as_tensor(values).device)


def all_gather(value, ranks: Ranks) -> list:
    """Every rank's ``value`` (any picklable object), in rank order."""
    if not ranks.launched:
        return [value]
    out = [None] * ranks.world_size
    dist.all_gather_object(out, value)
    return out


# ---- model --------------------------------------------------------------------------------
class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm over the samples of every rank: per-channel sums all-reduced (float64), the
    backward pass likewise (the formulas of PyTorch's CUDA SyncBatchNorm)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum):
        c = x.shape[1]
        dims = [d for d in range(x.ndim) if d != 1]
        xd = x.double()
        stats = torch.cat([xd.sum(dims), (xd * xd).sum(dims), xd.new_tensor([x.numel() // max(c, 1)])])
        dist.all_reduce(stats)
        n = stats[-1].item()
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {int(n)} over all ranks")
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
            running_var.mul_(1 - momentum).add_(momentum * (var * n / (n - 1)).to(running_var.dtype))
        shape = [1, c] + [1] * (x.ndim - 2)
        xhat = ((xd - mean.view(shape)) * invstd.view(shape)).to(x.dtype)
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.n = n
        return xhat * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx, dy):
        xhat, weight, invstd = ctx.saved_tensors
        c = xhat.shape[1]
        dims = [d for d in range(xhat.ndim) if d != 1]
        shape = [1, c] + [1] * (xhat.ndim - 2)
        local = torch.cat([dy.sum(dims), (dy * xhat).sum(dims)])     # this rank's d(bias), d(weight)
        total = local.double()
        dist.all_reduce(total)
        mean_dy, mean_dy_xhat = (total[:c] / ctx.n).view(shape), (total[c:] / ctx.n).view(shape)
        scale = (weight.double() * invstd).view(shape)
        dx = (scale * (dy.double() - mean_dy - xhat.double() * mean_dy_xhat)).to(dy.dtype)
        return dx, local[c:], local[:c], None, None, None, None


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """``nn.SyncBatchNorm`` for CPU tensors (PyTorch's runs on GPUs only): batch statistics over every
    rank's samples in training; a plain BatchNorm2d in eval mode or in one process. Same parameters and
    buffers, so checkpoints do not change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                            self.eps, momentum)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``module`` synced across ranks (same parameter and buffer objects)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module


class _ImagePath(nn.Module):
    """What DDP wraps: the backbone and decoder of an LSegNet (its forward is the network's own)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.pretrained, self.scratch = net.pretrained, net.scratch
        self._net = [net]           # not a submodule: the text tower stays outside DDP

    def forward(self, x, text):
        return self._net[0](x, text)


def data_parallel(net: nn.Module, ranks: Ranks) -> nn.Module:
    """``net`` with synced batch norm inside DistributedDataParallel (image path only), or ``net``
    itself in one process. Parameters that get no gradient must be frozen first."""
    if not ranks.launched:
        return net
    from torch.nn.parallel import DistributedDataParallel

    sync_batchnorm(net, ranks.device)
    # 1x1 convolutions' weight gradients come with other strides on their size-1 dimensions (the same
    # memory layout): DDP warns of a slower copy on every such layer
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(_ImagePath(net), device_ids=[ranks.device] if ranks.device.type == "cuda" else None)


# ---- command line -------------------------------------------------------------------------
def add_args(group) -> None:
    group.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                       help="under torchrun: how long the processes wait for one that neither answers nor "
                            "fails (one that dies is noticed at once)")


def split_batch(global_batch: int, world: int) -> int:
    """Samples per process of each global batch; ``ToolError`` unless the division is exact."""
    if global_batch < 1 or global_batch % world:
        raise ToolError(f"--batch-size {global_batch} (the global batch) does not divide by the {world} processes: "
                        f"give a multiple of {world}")
    return global_batch // world
