"""``lseg-fetch``: download the released LSeg checkpoints and check what arrived (docs/model.md §2.1).

Only files with a known public location are downloaded (Google Drive IDs from the official
README, docs/model.md §2.1). What arrives is written to ``<name>.part`` and kept under its final name
only when it is a whole PyTorch checkpoint that strict-loads into the expected LSeg layout
through the model library's safe loader; an HTML page (Drive's quota, login or virus-scan page)
or a truncated file is removed and the tool says what to do by hand. No checksums are known for
these files, so none are invented: the check is structural.
"""
from __future__ import annotations

import argparse
import html
import logging
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lseg_ros.model.variants import VARIANTS
from lseg_ros.tools.common import ToolError, cli, progress

log = logging.getLogger(__name__)

OFFICIAL_README = "https://github.com/isl-org/lang-seg#readme"
DRIVE_URL = "https://drive.google.com/uc?export=download&id={id}"


@dataclass(frozen=True)
class Release:
    name: str
    description: str
    drive_ids: tuple[str, ...] = ()   # tried in order
    size_note: str = ""


# Where a released file is known to be public; the others are listed without a source.
_DRIVE_IDS = {"demo_e200.ckpt": ("1FTuHY1xPUkM-5gaDtMfgCl3D0gR89WV7", "1ayk6NXURI_vIPlym16f_RG3ffxBWHxvb")}
_SIZES = {"demo_e200.ckpt": "about 1.7 GB (about 3 GB when it holds optimiser state)"}
RELEASES = {name: Release(name, f"{v.title}, {what}", _DRIVE_IDS.get(name, ()), _SIZES.get(name, ""))
            for v in VARIANTS.values() for name, what in v.released}


class VerifyError(ToolError):
    """The file is not a whole LSeg checkpoint; the message says why."""


def sniff(path: Path) -> str:
    """The model library's content check (``checkpoint.sniff``): 'zip', 'pickle' or
    'safetensors'; ``VerifyError`` for an empty file, an HTML page, a truncated zip..."""
    from lseg_ros.model.checkpoint import CheckpointError, sniff as sniff_checkpoint

    try:
        return sniff_checkpoint(path)
    except CheckpointError as e:
        raise VerifyError(str(e)) from None


def verify_checkpoint(path: Path, config=None) -> str:
    """Check that ``path`` is a whole LSeg checkpoint; returns a one-line description.

    Strict-loads it through the model library (safe unpickling, marker-key layout detection,
    every key and shape checked). ``config`` overrides the architecture (tests: tiny models).
    """
    from lseg_ros.model import CheckpointError, LSegNet

    path = Path(path)
    kind = sniff(path)
    try:
        net = LSegNet.from_checkpoint(path, config=config)
    except CheckpointError as e:
        raise VerifyError(str(e)) from None
    n = sum(p.numel() for p in net.parameters())
    return f"{path}: {kind} checkpoint, {net.config.backbone} backbone, {n / 1e6:.1f}M parameters - OK"


# ---- download ----------------------------------------------------------------------------
_FORM = re.compile(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S | re.I)
_INPUT = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.I)
_CONFIRM = re.compile(r'confirm=([0-9A-Za-z_\-]+)')


def drive_confirm_url(page: str, file_id: str) -> str | None:
    """The real download URL behind Drive's "can't scan this file for viruses" page, if any."""
    m = _FORM.search(page)
    if m:
        action = html.unescape(m.group(1))
        params = {k: html.unescape(v) for k, v in _INPUT.findall(m.group(2))}
        return action + "?" + urllib.parse.urlencode(params)
    m = _CONFIRM.search(page)
    if m:
        return DRIVE_URL.format(id=file_id) + f"&confirm={m.group(1)}"
    return None


def _open(url: str, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "lseg-fetch/0.1"})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - fixed https URLs


def download_drive(file_id: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream a public Drive file to ``dest`` (following the large-file confirmation page)."""
    resp = _open(DRIVE_URL.format(id=file_id), timeout)
    if "text/html" in resp.headers.get("Content-Type", ""):
        page = resp.read(2_000_000).decode("utf-8", "replace")
        resp.close()
        url = drive_confirm_url(page, file_id)
        if url is None:
            raise VerifyError("Google Drive answered with a web page and no download link "
                              "(quota exceeded, access denied, or the file was moved)")
        resp = _open(url, timeout)
    total = int(resp.headers.get("Content-Length") or 0) or None
    with resp, open(dest, "wb") as f, progress(total=total, desc=dest.name, unit="B") as bar:
        bar.unit_scale = True
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            f.write(chunk)
            bar.update(len(chunk))


def manual_steps(release: Release, dest: Path) -> str:
    urls = [f"https://drive.google.com/file/d/{i}/view" for i in release.drive_ids]
    where = ("download it in a browser from " + " or ".join(urls)) if urls else \
        f"download it by hand from the links in the official README ({OFFICIAL_README})"
    return (f"To get {release.name}: {where}; save it as {dest}; check it with "
            f"'lseg-fetch --verify {dest}'; then convert it with "
            f"'lseg-convert {dest} {dest.with_suffix('.safetensors')}'.")


def fetch(name: str, out_dir: Path, timeout: float = 60.0, force: bool = False) -> Path:
    if name not in RELEASES:
        raise ToolError(f"unknown checkpoint {name!r}; known: {', '.join(RELEASES)}")
    release = RELEASES[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / name
    if dest.exists() and not force:
        print(verify_checkpoint(dest))
        return dest
    if not release.drive_ids:
        raise ToolError(f"{name} has no known direct download. " + manual_steps(release, dest))
    part = dest.with_name(dest.name + ".part")
    errors = []
    for file_id in release.drive_ids:
        try:
            log.info("downloading %s (Drive id %s, %s)", name, file_id, release.size_note or "size unknown")
            download_drive(file_id, part, timeout)
            log.info("checking %s", part)
            msg = verify_checkpoint(part)
            os.replace(part, dest)
            print(msg.replace(str(part), str(dest)))
            return dest
        except (OSError, VerifyError) as e:   # URLError/HTTPError/timeouts are OSErrors
            errors.append(f"id {file_id}: {e}")
            log.warning("%s: %s", file_id, e)
        finally:
            if part.exists():
                part.unlink()
    raise ToolError(f"could not fetch {name} ({'; '.join(errors)}). " + manual_steps(release, dest))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lseg-fetch",
        description="Download released LSeg checkpoints (where the network allows) and verify them.",
        epilog="examples:\n  lseg-fetch --list\n  lseg-fetch demo_e200.ckpt -o weights/\n"
               "  lseg-fetch --verify weights/demo_e200.ckpt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="released file name (see --list)")
    p.add_argument("-o", "--output", type=Path, default=Path("."), help="folder to save into (default .)")
    p.add_argument("--list", action="store_true", help="list known checkpoints and where they come from")
    p.add_argument("--verify", type=Path, metavar="FILE", help="only check an existing file")
    p.add_argument("--force", action="store_true", help="download even if the file exists")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@cli
def _run(args) -> int:
    if args.list:
        for r in RELEASES.values():
            src = "Google Drive" if r.drive_ids else f"by hand, see {OFFICIAL_README}"
            print(f"{r.name:22s} {r.description}; {src}" + (f"; {r.size_note}" if r.size_note else ""))
        return 0
    if args.verify:
        if not args.verify.is_file():
            raise ToolError(f"{args.verify}: no such file")
        print(verify_checkpoint(args.verify))
        return 0
    if not args.name:
        raise ToolError("give a checkpoint name (see --list) or --verify FILE")
    fetch(args.name, args.output, args.timeout, args.force)
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
