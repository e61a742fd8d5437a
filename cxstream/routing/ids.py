"""Deterministic ids for the router's outputs: same input stream, same ids."""

from __future__ import annotations

import hashlib


def short_id(prefix: str, *parts: object) -> str:
    """A short stable id: *prefix* plus 16 hex digits of a BLAKE2b hash of *parts*.

    >>> short_id("as", "default", "c1", 1)
    'as-a45989924225a71d'
    >>> short_id("as", "default", "c1", 1) == short_id("as", "default", "c1", 1)
    True
    """
    text = "\x1f".join(repr(p) if isinstance(p, float) else str(p) for p in parts)
    return f"{prefix}-{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"
