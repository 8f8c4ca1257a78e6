"""Restricted unpickling of released checkpoints (see checkpoint.py for why).

`_SafeUnpickler` resolves only tensor-rebuilding functions and plain containers; any other
global becomes an inert placeholder that refuses to be called, so a pickled callable (e.g.
`os.system`) is reported, never run. The allowed functions are handed out as fresh wrappers
and BUILD (set state) is refused on anything but containers and tensors, so a file cannot
change this process's objects (e.g. a rebuild function's `__defaults__`). `safe_pickle` is the
module object handed to `torch.load(pickle_module=...)`.
"""
from __future__ import annotations

import collections
import pickle
import types

import torch

__all__ = ["CheckpointError", "UnsafeCheckpointError", "safe_pickle"]


class CheckpointError(ValueError):
    """A checkpoint could not be read or does not fit the model; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """The file asks the unpickler to call something other than a tensor rebuild function."""


# ---- restricted unpickling -----------------------------------------------------------

def _rebuild_from_type_v2(func, new_type, args, state):
    # Tensor subclasses are rebuilt through this; allow only the plain tensor types.
    if new_type not in (torch.Tensor, torch.nn.Parameter):
        raise UnsafeCheckpointError(f"refusing to rebuild a tensor of type {new_type!r}")
    return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)


# Functions the file may call. `find_class` hands out a fresh wrapper per lookup, never the
# function itself, so a BUILD opcode aimed at it could only touch a throwaway object (and
# `_SafeUnpickler.load_build` refuses such a BUILD anyway).
_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}
# Types and constants the file may name (immutable built-ins, or checked before use).
_TYPES = {
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}
_TYPES.update({("torch", str(d).split(".")[-1]): d for d in (
    torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.int8, torch.int16, torch.int32,
    torch.int64, torch.uint8, torch.bool)})


def _wrapper(fn):
    def call(*args, **kwargs):
        return fn(*args, **kwargs)

    call.__name__ = call.__qualname__ = fn.__name__
    return call


def _placeholder(module: str, name: str) -> type:
    """An inert stand-in for a class reference; constructing or calling it raises."""
    qual = f"{module}.{name}"

    def refuse(*args, **kwargs):
        raise UnsafeCheckpointError(f"the file asks to call {qual}, which a weights file never needs; refused")

    return type(f"Foreign[{qual}]", (), {"__new__": refuse, "__init__": refuse, "__reduce__": refuse,
                                         "qualified_name": qual, "__module__": __name__})


class _SafeUnpickler(pickle._Unpickler):
    """Pure-Python unpickler (its opcodes can be overridden, unlike the C one's)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _FUNCTIONS:
            return _wrapper(_FUNCTIONS[(module, name)])
        if (module, name) in _TYPES:
            return _TYPES[(module, name)]
        # e.g. the pytorch_lightning callback class used as a dict key: keep it inert.
        return _placeholder(module, name)

    def load_build(self):
        # BUILD sets state/attributes on the object on top of the stack. Weights files need it
        # only for containers (an OrderedDict's `_metadata`) and tensors; on anything else (a
        # class, a function, a dtype) it would change this process's objects: refuse.
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if isinstance(inst, type) or not (type(inst) in (dict, collections.OrderedDict)
                                          or isinstance(inst, torch.Tensor)):
            raise UnsafeCheckpointError(f"the file asks to set the state of {type(inst).__name__} "
                                        f"{inst!r:.80}; refused")
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


safe_pickle = types.ModuleType("lseg_safe_pickle")
safe_pickle.Unpickler = _SafeUnpickler
safe_pickle.load = lambda f, **kw: _SafeUnpickler(f, **kw).load()
safe_pickle.__name__ = "lseg_safe_pickle"
