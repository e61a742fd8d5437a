"""Pickle-free model snapshots: a JSON header followed by raw ``.npy`` arrays.

Layout (all integers little-endian)::

    b"CXSNAP" | u8 format version | u32 header length | header JSON (UTF-8) | arrays...

The header is a JSON object ``{"kind", "model_version", "meta", "arrays": [[name, nbytes], ...]}``
and each array is written with :func:`numpy.save` with ``allow_pickle=False``; loading uses
``allow_pickle=False`` too, so a snapshot can hold numbers and JSON only: no code runs on load.
The whole payload is zlib-compressed (most weight columns are zero).

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
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"CXSNAP"
FORMAT_VERSION = 1
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


def dump_snapshot(kind: str, model_version: int, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise a model state to bytes (no pickle).

    >>> dump_snapshot("k", 0, {}, {})[:6]
    b'CXSNAP'
    """
    blobs = [(name, _npy(name, arrays[name])) for name in sorted(arrays)]
    body = _head(kind, model_version, meta, blobs) + b"".join(data for _, data in blobs)
    return MAGIC + bytes([FORMAT_VERSION]) + zlib.compress(body, 6)


async def dump_snapshot_async(
    kind: str, model_version: int, meta: dict[str, Any], arrays: dict[str, np.ndarray], *, chunk: int = 1 << 16
) -> bytes:
    """:func:`dump_snapshot` for an event loop: the same bytes, made in slices of a few ms.

    Serialising a trained intent model takes ~350 ms, mostly zlib; in one go it stalls every
    other task of the loop for that long.  This version compresses *chunk* bytes at a time and
    lets the loop run between slices (no thread: a thread would contend for the GIL with the loop
    at every switch).  A 64 KB slice takes ~4 ms on the shared 2-core machine; the 256 KB slices
    before December 5 took 13-18 ms, and ``CX_LOOP_STALL_LOG_MS`` caught them holding the engine's
    loop every ten seconds.

    >>> import asyncio; blob = asyncio.run(dump_snapshot_async("k", 3, {"x": 1}, {"a": np.arange(5)}))
    >>> blob == dump_snapshot("k", 3, {"x": 1}, {"a": np.arange(5)})
    True
    """
    blobs = []
    for name in sorted(arrays):
        blobs.append((name, _npy(name, arrays[name])))
        await asyncio.sleep(0)
    z = zlib.compressobj(6)
    out = [MAGIC + bytes([FORMAT_VERSION])]
    for part in [_head(kind, model_version, meta, blobs), *(data for _, data in blobs)]:
        view = memoryview(part)
        for start in range(0, len(view), chunk):
            out.append(z.compress(view[start : start + chunk]))
            await asyncio.sleep(0)
    out.append(z.flush())
    return b"".join(out)


def load_snapshot(data: bytes, kind: str | None = None) -> Snapshot:
    """Decode bytes written by :func:`dump_snapshot`; never unpickles anything.

    >>> load_snapshot(dump_snapshot("k", 7, {"x": [1]}, {}), kind="k").meta
    {'x': [1]}
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SnapshotError("snapshot must be bytes")
    data = bytes(data)
    if len(data) < len(MAGIC) + 1 or not data.startswith(MAGIC):
        raise SnapshotError("not a cxstream snapshot (bad magic)")
    if data[len(MAGIC)] != FORMAT_VERSION:
        raise SnapshotError(f"unsupported snapshot format {data[len(MAGIC)]}")
    try:
        body = zlib.decompress(data[len(MAGIC) + 1 :])
    except zlib.error as exc:
        raise SnapshotError(f"corrupt snapshot: {exc}") from exc
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
