"""The rules a label set must follow, in one place (no torch: the node's parameter check, the
set_labels service, the tools' --labels and the text encoder all call `parse_labels`).

A label is a string; '|' separates alternatives ("person|pedestrian"), whose embeddings are
averaged (docs/model.md §1.6); the first alternative is the label's display name. CLIP's 77-token
limit is checked where the text is tokenized (text.tokenize).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple


def visible(text: str) -> bool:
    """True when `text` has a character that shows: not only spaces and invisible format characters
    (zero-width space, joiners, BOM), which CLIP would encode as an empty label."""
    return any(ch.isprintable() and not ch.isspace() for ch in text)


def parse_labels(labels: Sequence[str], max_labels: Optional[int] = None
                 ) -> Tuple[Tuple[str, ...], Tuple[Tuple[str, ...], ...]]:
    """Validate labels; return (display names, alternatives per label).

    Each label is stripped and split on '|' into stripped alternatives; the first one is
    its display name. Empty sets, more than `max_labels` labels, empty labels or alternatives, and
    duplicate names (case-insensitive: "Cat" and "cat" would be one class) raise ValueError naming
    the offending label; TypeError for anything but a list of strings.
    """
    if isinstance(labels, str):
        raise TypeError(f"labels must be a list of strings, not one string ({labels!r})")
    labels = list(labels)
    if not labels:
        raise ValueError("the label set is empty: give at least one label")
    if max_labels is not None and len(labels) > max_labels:
        raise ValueError(f"{len(labels)} labels: at most {max_labels} are accepted")
    names, alts, seen = [], [], {}
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"label {i} is {type(label).__name__}, not str: {label!r}")
        parts = tuple(p.strip() for p in label.strip().split("|"))
        if any(not visible(p) for p in parts):
            raise ValueError(f"label {i} ({label[:60]!r}) is empty or has an empty alternative")
        key = parts[0].casefold()
        if key in seen:
            raise ValueError(f"duplicate label {parts[0]!r} (labels {seen[key]} and {i})")
        seen[key] = i
        names.append(parts[0])
        alts.append(parts)
    return tuple(names), tuple(alts)


def label_problem(labels: Sequence[str], max_labels: Optional[int] = None) -> Optional[str]:
    """None when `parse_labels` accepts `labels`, else its reason (for checks that answer with text)."""
    try:
        parse_labels(labels, max_labels)
    except (TypeError, ValueError) as e:
        return str(e)
    return None
