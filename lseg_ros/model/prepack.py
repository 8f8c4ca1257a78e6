"""The image path's linear layers prepacked for oneDNN on the CPU (exact; inference only).

`nn.Linear` on the CPU calls the BLAS for fp32 (MKL: well below oneDNN's rate on the AMD EPYC measured
here) and reorders the weight into oneDNN's blocked layout on every call for bf16.
A `PackedLinear` holds the weight reordered once (`torch.ops.mkldnn._reorder_linear_weight`, the
layout inductor's freezing uses) and calls oneDNN's matmul with the bias, and the MLP's exact GELU
when it follows, fused as post-ops (`torch.ops.mkldnn._linear_pointwise`). Measured on this 2-core
AMD EPYC (Zen 4), 1200 tokens of ViT-L/16: fp32 142-160 -> 195-204 GFLOP/s, bf16 331-368 ->
369-393 GFLOP/s; outputs equal to `F.linear` within fp32 rounding (docs/performance.md).

The packed weight replaces the plain one (no second copy in memory); `weight` and `state_dict()`
still give the plain tensor back, and `unpack_linears` restores plain `nn.Linear`/`nn.GELU` layers
exactly (a Predictor does so before it converts a packed net to another precision or device).
"""
from __future__ import annotations

import functools
import logging
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def _linear_op(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor], act: str) -> torch.Tensor:
    # The fourth argument names the post-op, the sixth its algorithm ("none" = exact erf GELU).
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, act, [], "none" if act == "gelu" else "")


@functools.lru_cache(maxsize=None)
def prepack_supported(dtype: torch.dtype) -> bool:
    """True when this build and CPU run oneDNN's packed linear for `dtype` and it matches F.linear
    (checked once on a small layer, with and without the fused GELU)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        w, b = torch.randn(48, 40, generator=g).to(dtype), torch.randn(48, generator=g).to(dtype)
        x = torch.randn(2, 5, 40, generator=g).to(dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 10)
        with torch.inference_mode():
            ok = all(torch.allclose(_linear_op(x, packed, b, act).float(), ref(F.linear(x, w, b)).float(),
                                    rtol=2e-2, atol=2e-2 if dtype != torch.float32 else 1e-4)
                     for act, ref in (("none", lambda y: y), ("gelu", F.gelu)))
        return bool(ok) and torch.equal(packed.to_dense(), w)
    except (RuntimeError, NotImplementedError, AttributeError) as e:
        log.info("oneDNN packed linear unavailable for %s: %s", dtype, e)
        return False


class PackedLinear(nn.Module):
    """`nn.Linear` (optionally followed by an exact `nn.GELU`) with its weight prepacked for oneDNN."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], act: str = "none",
                 rows_hint: int = 1024) -> None:
        super().__init__()
        if act not in ("none", "gelu"):
            raise ValueError(f"act must be 'none' or 'gelu', got {act!r}")
        self.out_features, self.in_features = weight.shape
        self.act, self.rows_hint = act, rows_hint
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), rows_hint)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, act: str = "none", rows_hint: int = 1024) -> "PackedLinear":
        return cls(linear.weight, linear.bias, act, rows_hint)

    @property
    def weight(self) -> torch.Tensor:
        """The plain (out, in) weight, unpacked on demand (for inspection and state_dict)."""
        return self.packed.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear_op(x.contiguous(), self.packed, self.bias, self.act)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def __deepcopy__(self, memo):  # oneDNN's opaque tensors cannot be copied: repack a plain copy
        return PackedLinear(self.weight.clone(), None if self.bias is None else self.bias.clone(), self.act,
                            self.rows_hint)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"act={self.act}, dtype={self.packed.dtype}")


class FusedGELU(nn.Identity):
    """Stands where an exact `nn.GELU` was, now fused into the `PackedLinear` before it."""


def _exact_gelu(m: nn.Module) -> bool:
    return type(m) is nn.GELU and m.approximate == "none"


def pack_linears(modules: Iterable[nn.Module], rows_hint: int = 1024) -> int:
    """Replace every `nn.Linear` under `modules` by a `PackedLinear`, in place; an exact GELU right
    after it (timm's Mlp `fc1`/`act`, or the next entry of an `nn.Sequential`) is fused and replaced
    by a `FusedGELU` (an identity). Inference only: the packed layers have no gradient and do not load
    a state_dict. Returns the number of layers packed."""
    count = 0
    for root in modules:
        # Only the parents are listed, so each plain layer is freed as soon as it is replaced
        # (listing every module kept all plain weights alive until the end: +1.2 GB peak for ViT-L/16).
        parents = [m for m in root.modules() if any(isinstance(c, nn.Linear) for c in m.children())]
        for parent in parents:
            children = list(parent.named_children())
            for i, (name, child) in enumerate(children):
                if not isinstance(child, nn.Linear):
                    continue
                act = "none"
                if isinstance(parent, nn.Sequential) and i + 1 < len(children) and _exact_gelu(children[i + 1][1]):
                    act = "gelu"
                    setattr(parent, children[i + 1][0], FusedGELU())
                elif name == "fc1" and _exact_gelu(getattr(parent, "act", None)):  # timm Mlp
                    act = "gelu"
                    parent.act = FusedGELU()
                setattr(parent, name, PackedLinear.from_linear(child, act, rows_hint))
                count += 1
            del children, child
    return count


def packed_dtype(modules: Iterable[nn.Module]) -> Optional[torch.dtype]:
    """The dtype the modules' linear layers were packed for, or None when none is packed."""
    for root in modules:
        for m in root.modules():
            if isinstance(m, PackedLinear):
                return m.packed.dtype
    return None


def unpack_linears(modules: Iterable[nn.Module]) -> int:
    """Undo `pack_linears` exactly, in place: plain `nn.Linear` and `nn.GELU` layers again."""
    count = 0
    for root in modules:
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, PackedLinear):
                    plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                      device="cpu", dtype=child.packed.dtype).requires_grad_(False)
                    plain.weight.copy_(child.weight)
                    if child.bias is not None:
                        plain.bias.copy_(child.bias)
                    setattr(parent, name, plain)
                    count += 1
                elif isinstance(child, FusedGELU):
                    setattr(parent, name, nn.GELU())
    return count
