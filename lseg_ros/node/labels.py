"""The label set in force: validated, encoded off the frame path, swapped by replacing one reference.

The worker reads `LabelState.active` once per batch, so every frame's mask ids, names and label-map
version come from one set; the label map with a new version is published before the swap, so no
frame refers to a version its subscribers have not been sent. Without a model (unconfigured node)
labels are checked as encoding would check them (the tokenizer) and stored: configure encodes them.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from .. import imaging
from . import params as P


@dataclass(frozen=True, eq=False)
class ActiveLabels:
    """The label set in force, with its map version and colours. Replaced, never mutated."""

    label_set: Any  # lseg_ros.model.LabelSet
    version: int
    colors: np.ndarray  # (N, 3) uint8 RGB

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self.label_set.names)

    @property
    def unlabeled_id(self) -> int:
        return imaging.unlabeled_id(len(self.names))


def check_texts(labels: List[str]) -> Optional[str]:
    """None when `labels` would encode (structure, count, CLIP's 77-token limit), else the reason."""
    reason = P.validate("labels", labels)
    if reason:
        return reason
    from lseg_ros.model.text import parse_labels, tokenize

    try:
        tokenize([alt for parts in parse_labels(labels)[1] for alt in parts])
    except (TypeError, ValueError) as e:
        return str(e)
    return None


class LabelState:
    """Label texts, the encoded set in force and its version. `lock` serialises changes."""

    def __init__(self, texts: List[str], palette: str, publish_map: Callable[[ActiveLabels], None]) -> None:
        self.lock = threading.RLock()
        self.texts: List[str] = list(texts)
        self.palette = palette
        self.active: Optional[ActiveLabels] = None
        self._version = 0
        self._publish_map = publish_map

    def names_in_force(self) -> List[str]:
        active = self.active
        return list(active.label_set.texts) if active is not None else list(self.texts)

    def set(self, labels: List[str], predictor) -> Tuple[bool, str]:
        """Validate, encode with `predictor` (None: check and store) and swap."""
        with self.lock:
            if predictor is None:
                reason = check_texts(labels)
                if reason:
                    return False, reason
                self.texts = list(labels)
                return True, f"{len(labels)} labels stored; they are encoded at configure"
            reason = P.validate("labels", labels)
            if reason:
                return False, reason
            t0 = time.perf_counter()
            try:
                label_set = predictor.encode_labels(list(labels))
            except (TypeError, ValueError) as e:
                return False, str(e)
            self.texts = list(labels)
            active = self.swap(label_set)
            return True, (f"{len(label_set)} labels in force (label map version {active.version}, "
                          f"encoded in {1000 * (time.perf_counter() - t0):.0f} ms)")

    def swap(self, label_set, palette: Optional[str] = None) -> ActiveLabels:
        """Makes label_set the one in force (publishing its map first)."""
        with self.lock:
            if palette is not None:
                self.palette = palette
            self._version += 1
            active = ActiveLabels(label_set, self._version, imaging.palette(len(label_set), self.palette))
            self._publish_map(active)
            self.active = active
            return active

    def drop(self) -> None:
        """Forgets the encoded set (cleanup); the texts stay for the next configure."""
        with self.lock:
            self.active = None
