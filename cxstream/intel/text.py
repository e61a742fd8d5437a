"""Hashed text features: word unigrams, word bigrams and character n-grams.

Features are hashed with CRC-32 (stable across processes and platforms, unlike
Python's salted ``hash``) into ``n_features`` buckets.  Only bucket indices and
weights leave this module: models never store message text.

>>> idx, val = hashed_features("My card hasn't arrived", 1 << 18)
>>> len(idx) == len(val) and abs(float((val ** 2).sum()) - 1.0) < 1e-6
True
>>> hashed_features("", 1 << 10)[0].size
0
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from zlib import crc32

import numpy as np

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_DIGITS = re.compile(r"\d")


def tokenize(text: str) -> list[str]:
    """Lower-case, NFKC-normalise and split into word tokens (digits mapped to ``0``).

    >>> tokenize("Top-up of £20 FAILED!")
    ['top', 'up', 'of', '00', 'failed']
    """
    norm = unicodedata.normalize("NFKC", text).lower()
    return _TOKEN.findall(_DIGITS.sub("0", norm))


_CACHE_MAX = 65536


class _TokenCache:
    """Bounded memo of the hashed char n-grams of a token (pure: same input, same output)."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, int, int, int], tuple[int, ...]] = {}

    def grams(self, tok: str, mask: int, char_min: int, char_max: int) -> tuple[int, ...]:
        key = (tok, mask, char_min, char_max)
        hit = self.table.get(key)
        if hit is not None:
            return hit
        padded = " " + tok + " "
        size = len(padded)
        out = [crc32(("w:" + tok).encode("utf-8")) & mask]
        for n in range(char_min, min(char_max, size) + 1):
            for j in range(size - n + 1):
                out.append(crc32(("c:" + padded[j : j + n]).encode("utf-8")) & mask)
        res = tuple(out)
        if len(self.table) >= _CACHE_MAX:
            self.table.clear()
        self.table[key] = res
        return res


_TOKENS = _TokenCache()


def feature_counts(text: str, n_features: int, char_min: int = 2, char_max: int = 5) -> dict[int, float]:
    """Count hashed features of ``text``: ``w:`` words, ``b:`` bigrams, ``c:`` char n-grams.

    Character n-grams are taken inside word boundaries (each word padded with spaces),
    which is robust to typos and inflections.  Per-token n-gram hashes are memoised.

    >>> counts = feature_counts("card card", 1 << 20)
    >>> max(counts.values())
    2.0
    """
    return {h: float(n) for h, n in _counts(text, n_features - 1, char_min, char_max).items()}


def _counts(text: str, mask: int, char_min: int, char_max: int) -> Counter[int]:
    """Feature hash -> count, keys in order of first occurrence (``feature_counts``'s order)."""
    hashes: list[int] = []
    add, extend, grams = hashes.append, hashes.extend, _TOKENS.grams
    prev = "<s>"
    toks = tokenize(text)
    for tok in toks:
        add(crc32(("b:" + prev + " " + tok).encode("utf-8")) & mask)
        extend(grams(tok, mask, char_min, char_max))
        prev = tok
    if toks:
        add(crc32(("b:" + prev + " </s>").encode("utf-8")) & mask)
    return Counter(hashes)


def hashed_features(text: str, n_features: int, char_min: int = 2, char_max: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(indices, values)``: sublinear (``log1p``) counts, L2-normalised.

    ``n_features`` must be a power of two.

    >>> idx, val = hashed_features("hello", 1 << 16)
    >>> bool((idx < (1 << 16)).all()), val.dtype.name
    (True, 'float32')
    """
    if n_features <= 0 or n_features & (n_features - 1):
        raise ValueError("n_features must be a power of two")
    counts = _counts(text, n_features - 1, char_min, char_max)
    n = len(counts)
    idx = np.fromiter(counts.keys(), dtype=np.int64, count=n)
    val = np.log1p(np.fromiter(counts.values(), dtype=np.float32, count=n))
    norm = float(np.sqrt(np.dot(val, val)))
    if norm > 0.0:
        val /= norm
    return idx, val
