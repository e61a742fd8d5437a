"""Pickle-free model snapshots: a JSON header followed by raw ``.npy`` arrays.

Layout (all integers little-endian)::

    b"CXSNAP" | u8 format version | u32 header length | header JSON (UTF-8) | arrays...

The header is a JSON object ``{"kind", "model_version", "meta", "arrays": [[name, nbytes], ...]}``
and each array is written with :func:`numpy.save` with ``allow_pickle=False``; loading uses
``allow_pickle=False`` too, so a snapshot can hold numbers and JSON only: no code runs on load.
The payload after the format byte is one zstd frame (format 2, level 3, its size in the frame's
header; most weight columns are zero).  Format 1, written before December 5, 2026, is the same
payload zlib-compressed: it is still read.  A trained intent model's 5 MB payload compresses in
~7 ms with zstd against ~70 with zlib at level 6, to two thirds of the bytes, and decompresses in
~3 ms against ~9 (bench/results/pipeline-ab-snapshots-205.json says why that matters: every
publication and every load held the batch stages' loop up).

>>> import numpy as np
>>> blob = dump_snapshot("demo", 3, {"a": 1}, {"w": np.arange(3.0)})
>>> snap = load_snapshot(blob, kind="demo")
>>> snap.model_version, snap.meta["a"], snap.arrays["w"].tolist()
(3, 1, [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

MAGIC = b"CXSNAP"
FORMAT_VERSION = 2  # zstd; what dump_snapshot writes
FORMAT_ZLIB = 1  # zlib, written until December 5, 2026: read only
ZSTD_LEVEL = 3
CHUNK = 1 << 20  # payload bytes compressed at a time: ~1.5 ms of zstd, the slice dump_snapshot_async lets the loop run between
_MAX_HEADER = 16 * 1024 * 1024


class SnapshotError(ValueError):
    """Raised when bytes are not a valid snapshot of the expected kind."""


@dataclass(frozen=True)
class Snapshot:
    """A decoded snapshot: kind, model version, JSON metadata and named arrays."""

    kind: str
    model_version: int
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


#: (kind, model_version, meta, arrays): the arguments of :func:`dump_snapshot`.
SnapshotParts = tuple[str, int, dict[str, Any], dict[str, np.ndarray]]


class Snapshotted:
    """``publish``, ``publish_parts`` and ``to_bytes`` of a model that says what it holds in ``snapshot_parts``.

    ``snapshot_parts`` returns the kind, version, metadata and arrays, copied (:func:`owned`), so
    that serialising them (``dump_snapshot_async``, in slices) can go on while the model learns."""

    version: int

    def snapshot_parts(self) -> SnapshotParts:
        raise NotImplementedError

    def publish_parts(self) -> SnapshotParts:
        """Bump ``version`` and return a copy of the state for :func:`dump_snapshot`."""
        self.version += 1
        return self.snapshot_parts()

    def publish(self) -> bytes:
        """Bump ``version`` and return the snapshot bytes to publish."""
        return dump_snapshot(*self.publish_parts())

    def to_bytes(self) -> bytes:
        """The pickle-free snapshot of the model as it is (``version`` unchanged)."""
        return dump_snapshot(*self.snapshot_parts())


def owned(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """*arrays* with every view replaced by a copy, so the model's later updates do not reach them.

    >>> a = np.zeros(3); o = owned({"v": a[:2]}); a[0] = 1; float(o["v"][0])
    0.0
    """
    return {k: v if v.flags.owndata else v.copy() for k, v in arrays.items()}


def _npy(name: str, array: np.ndarray) -> bytes:
    """One array in ``.npy`` format (refusing object arrays, which would need pickle)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype == object:
        raise SnapshotError(f"array {name!r} has dtype object, which would need pickle")
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _head(kind: str, model_version: int, meta: dict[str, Any], blobs: list[tuple[str, bytes]]) -> bytes:
    """The body's start: the JSON header's length and the header (kind, version, meta, array index)."""
    index = [[name, len(data)] for name, data in blobs]
    header = json.dumps(
        {"kind": kind, "model_version": int(model_version), "meta": meta, "arrays": index},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    ).encode("utf-8")
    return struct.pack("<I", len(header)) + header


def _payload(kind: str, model_version: int, meta: dict[str, Any], blobs: list[tuple[str, bytes]]) -> list[bytes]:
    """What a snapshot compresses, in order: the header, then each array's ``.npy`` bytes."""
    return [_head(kind, model_version, meta, blobs), *(data for _, data in blobs)]


def _compressed(parts: list[bytes], chunk: int) -> Iterator[bytes]:
    """The snapshot's bytes, *chunk* bytes of payload compressed at a time: the magic and format, then one zstd frame of *parts*."""
    yield MAGIC + bytes([FORMAT_VERSION])
    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj(size=sum(len(p) for p in parts))
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(view), chunk):
            yield z.compress(view[start : start + chunk])
    yield z.flush()


def dump_snapshot(kind: str, model_version: int, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise a model state to bytes (no pickle).

    >>> dump_snapshot("k", 0, {}, {})[:7] == MAGIC + bytes([FORMAT_VERSION])
    True
    """
    blobs = [(name, _npy(name, arrays[name])) for name in sorted(arrays)]
    return b"".join(_compressed(_payload(kind, model_version, meta, blobs), CHUNK))


async def dump_snapshot_async(
    kind: str, model_version: int, meta: dict[str, Any], arrays: dict[str, np.ndarray], *, chunk: int = CHUNK
) -> bytes:
    """:func:`dump_snapshot` for an event loop: the same bytes, made in slices of about a millisecond.

    The learner shares the batch stages' loop.  Serialising a trained intent model took ~350 ms
    of zlib on a slow day; in one go it stalled every other task of the loop for that long, and
    in 64 KB slices of ~4 ms it still held the loop up every ten seconds.  zstd compresses a
    *chunk* of 1 MB in ~1.5 ms, and the loop runs between slices (no thread: a thread would
    contend for the GIL with the loop at every switch).

    >>> import asyncio; blob = asyncio.run(dump_snapshot_async("k", 3, {"x": 1}, {"a": np.arange(5)}))
    >>> blob == dump_snapshot("k", 3, {"x": 1}, {"a": np.arange(5)})
    True
    """
    blobs = []
    for name in sorted(arrays):
        blobs.append((name, _npy(name, arrays[name])))
        await asyncio.sleep(0)
    out = []
    for piece in _compressed(_payload(kind, model_version, meta, blobs), chunk):
        out.append(piece)
        await asyncio.sleep(0)
    return b"".join(out)


def snapshot_body(data: bytes) -> bytes:
    """The payload of a snapshot, decompressed: the header's length, the header, the arrays.

    >>> snapshot_body(dump_snapshot("k", 1, {}, {}))[4:]
    b'{"arrays":[],"kind":"k","meta":{},"model_version":1}'
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SnapshotError("snapshot must be bytes")
    data = bytes(data)
    if len(data) < len(MAGIC) + 1 or not data.startswith(MAGIC):
        raise SnapshotError("not a cxstream snapshot (bad magic)")
    fmt, payload = data[len(MAGIC)], data[len(MAGIC) + 1 :]
    try:
        if fmt == FORMAT_VERSION:
            body = zstandard.ZstdDecompressor().decompress(payload)
        elif fmt == FORMAT_ZLIB:
            body = zlib.decompress(payload)
        else:
            raise SnapshotError(f"unsupported snapshot format {fmt} (this engine reads {FORMAT_ZLIB} and {FORMAT_VERSION})")
    except (zlib.error, zstandard.ZstdError) as exc:
        raise SnapshotError(f"corrupt snapshot: {exc}") from exc
    return body


def load_snapshot(data: bytes, kind: str | None = None) -> Snapshot:
    """Decode bytes written by :func:`dump_snapshot`; never unpickles anything.

    >>> load_snapshot(dump_snapshot("k", 7, {"x": [1]}, {}), kind="k").meta
    {'x': [1]}
    >>> old = MAGIC + bytes([FORMAT_ZLIB]) + zlib.compress(_head("k", 7, {"x": [1]}, []))  # format 1, before December 5
    >>> load_snapshot(old, kind="k").model_version
    7
    """
    body = snapshot_body(data)
    if len(body) < 4:
        raise SnapshotError("truncated snapshot")
    (hlen,) = struct.unpack("<I", body[:4])
    if hlen > _MAX_HEADER or 4 + hlen > len(body):
        raise SnapshotError("truncated snapshot header")
    try:
        header = json.loads(body[4 : 4 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"bad snapshot header: {exc}") from exc
    if kind is not None and header.get("kind") != kind:
        raise SnapshotError(f"snapshot kind {header.get('kind')!r}, expected {kind!r}")
    arrays: dict[str, np.ndarray] = {}
    pos = 4 + hlen
    for name, nbytes in header["arrays"]:
        chunk = body[pos : pos + int(nbytes)]
        if len(chunk) != int(nbytes):
            raise SnapshotError(f"truncated array {name!r}")
        try:
            arrays[str(name)] = np.load(io.BytesIO(chunk), allow_pickle=False)
        except ValueError as exc:
            raise SnapshotError(f"bad array {name!r}: {exc}") from exc
        pos += int(nbytes)
    return Snapshot(str(header["kind"]), int(header["model_version"]), dict(header["meta"]), arrays)
