"""Checkpoints: the released Lightning files (docs/model.md §2) and the project's own format.

Released files (demo_e200.ckpt, fss_l16.ckpt, fss_rn101.ckpt, fold checkpoints) are
PyTorch-Lightning 1.x pickles whose `callbacks` dict is keyed by a Lightning class, so
`torch.load(weights_only=True)` refuses them and plain unpickling would need (and run)
pytorch_lightning. They are read through the restricted unpickler of safe_pickle.py (a pickled
callable is reported, never run). TorchScript archives are refused: torch.load would run their code.

This module does not import the network: the loaders take the class to build (`build`), which
`LSegNet.from_checkpoint` passes, so lseg.py -> checkpoint.py is the only direction.

The own format is a safetensors file (no pickle at all) with the `LSegConfig` as JSON in
its metadata. Formats are recognised by their first bytes, not by file extension.
"""
from __future__ import annotations

import logging
import os
import struct
import zipfile
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

import torch

from .config import LSegConfig
from .devices import resolve_device
from .safe_pickle import CheckpointError, UnsafeCheckpointError, safe_pickle
from .variants import VARIANTS, released_variant

if TYPE_CHECKING:  # the network module imports this one (from_checkpoint), never the reverse
    from .lseg import LSegNet

Builder = Callable[[LSegConfig], "LSegNet"]

log = logging.getLogger(__name__)

OWN_FORMAT = "lseg_ros"
OWN_FORMAT_VERSION = "1"


# ---- format detection ----------------------------------------------------------------

_HTML = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")


def sniff(path) -> str:
    """The file's format from its content: 'zip' (torch >= 1.6 checkpoint), 'pickle' (legacy
    torch.save) or 'safetensors'. Raises `CheckpointError` naming the file for anything else:
    missing, empty, an HTML page (a failed download), a truncated zip, a zip without data.pkl."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a file")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty")
    with open(path, "rb") as f:
        head = f.read(512)
    low = head.lstrip().lower()
    if low.startswith(_HTML) or b"<html" in low:
        raise CheckpointError(f"{path!r} is an HTML page, not a checkpoint (Google Drive answers with a page "
                              "when the download quota is exceeded, a sign-in is needed or the link is wrong)")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            raise CheckpointError(f"{path!r} is truncated or corrupt ({size} bytes; the zip directory at the "
                                  "end is missing - an interrupted download?)") from None
        if not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(f"{path!r} is a zip archive but not a PyTorch checkpoint (no data.pkl)")
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 8 + n <= size:
            return "safetensors"
    raise CheckpointError(f"{path!r} is neither a PyTorch checkpoint nor a safetensors file "
                          f"(starts with {head[:16]!r})")



def _is_torchscript(names) -> bool:
    return any(n.endswith("constants.pkl") or "/code/" in n or n.startswith("code/") for n in names)


def _read_torch(path: str, kind: str) -> dict:
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile as e:
            raise CheckpointError(f"{path!r} is truncated or corrupt: {e}") from None
        if not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(f"{path!r} is a zip archive but not a PyTorch checkpoint (no data.pkl)")
        if _is_torchscript(names):
            # torch.load would hand such a file to torch.jit.load, i.e. run its code.
            raise CheckpointError(f"{path!r} is a TorchScript archive (e.g. OpenAI CLIP's .pt), which is not "
                                  "read (loading it runs its code); pass a state-dict file instead, e.g. "
                                  "open_clip's ViT-B-32-quickgelu weights or a released LSeg .ckpt")
    try:
        obj = torch.load(path, map_location="cpu", pickle_module=safe_pickle, weights_only=False,
                         mmap=(kind == "zip"))
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path!r}: {e}") from None
    except Exception as e:  # truncated, corrupt: torch raises RuntimeError, EOFError, UnpicklingError...
        raise CheckpointError(f"cannot read checkpoint {path!r} ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _read_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a safetensors file; `CheckpointError` naming the file if unreadable."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(path), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read safetensors file {path!r}: {e}") from None


def read_state_dict(path) -> Dict[str, torch.Tensor]:
    """The tensors of a weights file, whatever its format (recognised by content):
    a safetensors file; a plain `torch.save`d state dict; or a dict holding one under
    'state_dict' (Lightning, e.g. a released LSeg .ckpt), 'model' or 'module'. Pickles go
    through the restricted unpickler; TorchScript archives are refused (never executed).
    Keys are returned as stored (no prefix removed). `CheckpointError` names the file."""
    path = os.fspath(path)
    kind = sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path)[0]
    sd = _read_torch(path, kind)
    for key in ("state_dict", "model", "module"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path!r} is not a state dict (name -> tensor): e.g. entry {bad[0]!r} holds a "
                              f"{type(sd[bad[0]]).__name__}")
    if not sd:
        raise CheckpointError(f"{path!r} holds no tensors")
    return dict(sd)


# ---- released layouts ----------------------------------------------------------------

# Parts of the released files the project does not use: CLIP's visual tower and its
# logit scale (LSeg uses a fixed 1/0.07). They are discarded by name; all else is strict.
_DISCARD_PREFIXES = ("clip_pretrained.visual.", "clip_pretrained.logit_scale")


def _rename_released(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = k[len("net."):]
        if k.startswith(_DISCARD_PREFIXES):
            continue
        if k.startswith("clip_pretrained."):
            k = "text.tower." + k[len("clip_pretrained."):]
        # pretrained.* and scratch.* keep their names (our modules mirror them).
        # CLIP is stored in float16: cast. Copy float32 tensors too: they are memory-mapped
        # from the file, which must not stay tied to the live model.
        out[k] = v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()
    return out


def _released_state_dict(path: str, obj: dict) -> Tuple[LSegConfig, Dict[str, torch.Tensor]]:
    sd = obj.get("state_dict")
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{path!r} has no 'state_dict' (top-level keys: {sorted(map(str, obj))[:10]})")
    bad = [k for k in sd if not isinstance(k, str) or not k.startswith("net.")]
    if bad:
        raise CheckpointError(f"{path!r} is not an LSeg checkpoint: keys without the 'net.' prefix, e.g. {bad[:5]}")
    variant = released_variant(sd)  # by marker keys (variants.py, docs/model.md §2.1)
    if variant is None:
        markers = " nor ".join(f"{v.title} '{v.marker}*'" for v in VARIANTS.values() if v.marker)
        raise CheckpointError(f"{path!r}: unrecognised LSeg layout (neither {markers} keys)")
    return variant.config(), _rename_released(sd)


# ---- strict loading --------------------------------------------------------------------

def _fmt(keys, limit=12) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(expected: Dict[str, torch.Tensor], sd: Dict[str, torch.Tensor], path, what: str) -> None:
    """Strict check of `sd` against a module's `expected` state dict: every key present, none
    extra, every shape equal; `CheckpointError` naming the file and the keys otherwise."""
    missing = set(expected) - set(sd)
    unexpected = set(sd) - set(expected)
    if missing or unexpected:
        msg = [f"checkpoint {os.fspath(path)!r} does not fit the {what}"]
        if missing:
            msg.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            msg.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if any(k.startswith("scratch.head_block") for k in unexpected | missing):
            msg.append("(scratch.head_block.* holds the spatial-regularisation block: check spatial_block)")
        raise CheckpointError("; ".join(msg))
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r}: shape mismatch for {len(wrong)} keys: "
                              f"{_fmt(wrong, 6)}")


def load_strict(module: torch.nn.Module, sd: Dict[str, torch.Tensor], path, what: str) -> None:
    """Load `sd` into `module` strictly, checked first (keys and shapes) so a bad file changes
    nothing; `CheckpointError` naming the file otherwise."""
    check_state_dict(module.state_dict(), sd, path, what)
    module.load_state_dict(sd, strict=True)


def _build_and_load(path: str, config: LSegConfig, sd: Dict[str, torch.Tensor], build: Builder) -> "LSegNet":
    # Build on the meta device: no time spent on random init of ~400M parameters.
    with torch.device("meta"):
        net = build(config)
    check_state_dict(net.state_dict(), sd, path, f"{config.backbone} model")
    net.load_state_dict(sd, strict=True, assign=True)
    # Non-persistent buffers are not in any checkpoint: recreate them on the CPU.
    net.mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    net.std = torch.tensor(config.std).view(1, 3, 1, 1)
    tower = net.text.tower
    if tower.attn_mask is not None:  # the causal mask (None only for bidirectional towers)
        tower.attn_mask = tower.build_causal_mask().to("cpu")
    still_meta = [n for n, t in list(net.named_parameters()) + list(net.named_buffers()) if t.is_meta]
    if still_meta:  # a guard for future library versions adding buffers
        raise CheckpointError(f"internal: tensors not restored after loading {path!r}: {_fmt(still_meta)}")
    net.untrained = False
    return net.eval()


def _resolve_arch(path: str, stored: LSegConfig, spatial_block, block_depth, activation) -> LSegConfig:
    asked = (spatial_block, block_depth, activation)
    have = (stored.spatial_block, stored.block_depth, stored.activation)
    if asked == (None, 0, "lrelu") or asked == have:  # defaults: the file's record wins
        return stored
    raise CheckpointError(f"{path!r} records spatial_block/block_depth/activation = {have}, but {asked} was asked")


def load_checkpoint(path, build: Builder, spatial_block: Optional[str] = None, block_depth: int = 0,
                    activation: str = "lrelu", device="cpu", config: Optional[LSegConfig] = None) -> "LSegNet":
    """See `LSegNet.from_checkpoint` (which passes itself as `build`)."""
    path = os.fspath(path)
    device = resolve_device(device)
    kind = sniff(path)
    if kind == "safetensors":
        net = load_own(path, build, spatial_block, block_depth, activation)
    else:
        obj = _read_torch(path, kind)
        cfg, sd = _released_state_dict(path, obj)
        cfg = config or cfg
        cfg = cfg.replace(spatial_block=spatial_block, block_depth=block_depth, activation=activation)
        net = _build_and_load(path, cfg, sd, build)
    log.info("loaded %s checkpoint %s (%s backbone)", kind, path, net.config.backbone)
    return net.to(device).eval()


# ---- own format ------------------------------------------------------------------------

def save_own(net: "LSegNet", path) -> str:
    """Write the project's format: safetensors weights + {'format', 'format_version', 'config'}."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    meta = {"format": OWN_FORMAT, "format_version": OWN_FORMAT_VERSION, "config": net.config.to_json()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part"
    save_file(tensors, tmp, metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors writes through a private temp file (0600)
    os.replace(tmp, path)  # never leave a half-written file under the final name
    return path


def load_own(path: str, build: Builder, spatial_block=None, block_depth: int = 0,
             activation: str = "lrelu") -> "LSegNet":
    sd, meta = _read_safetensors(path)
    if meta.get("format") != OWN_FORMAT:
        raise CheckpointError(f"{path!r} is a safetensors file but not an lseg_ros checkpoint (metadata {meta})")
    if meta.get("format_version") != OWN_FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has format version {meta.get('format_version')!r}; "
                              f"this code reads {OWN_FORMAT_VERSION!r}")
    try:
        stored = LSegConfig.from_json(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path!r}: bad architecture metadata ({e})") from None
    return _build_and_load(path, _resolve_arch(path, stored, spatial_block, block_depth, activation), sd, build)


def convert_checkpoint(src, dst, build: Builder, spatial_block: Optional[str] = None, block_depth: int = 0,
                       activation: str = "lrelu", config: Optional[LSegConfig] = None) -> str:
    """Released Lightning file -> own safetensors file (no pickle needed to load it again).
    `config` overrides the architecture recognised from the keys (e.g. tiny test layouts).
    The package exports this with `build=LSegNet` bound (lseg_ros.model.convert_checkpoint)."""
    net = load_checkpoint(src, build, spatial_block=spatial_block, block_depth=block_depth, activation=activation,
                          config=config)
    return save_own(net, dst)


def read_metadata(path) -> dict:
    """Metadata of an own-format file ({'format', 'format_version', 'config' (LSegConfig)})."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if sniff(path) != "safetensors":
        raise CheckpointError(f"{path!r} is not an lseg_ros safetensors file")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read safetensors file {path!r}: {e}") from None
    if "config" in meta:
        try:
            meta["config"] = LSegConfig.from_json(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path!r}: bad architecture metadata ({e})") from None
    return meta


__all__ = ["CheckpointError", "UnsafeCheckpointError", "load_checkpoint", "save_own", "load_own",
           "convert_checkpoint", "read_metadata", "read_state_dict", "sniff", "check_state_dict", "load_strict"]
