"""Bytes <-> records at the Kafka boundary (msgspec: validating and fast).

Decoding failures are translated into :class:`InvalidInput` with a machine
``error_type`` and a human ``reason`` that names the failing field path; the
ingest stage turns them into dead letters.
"""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import msgspec
import zstandard

from cxstream.schemas import Assignment, InteractionEvent, OutcomeEvent, Record, RouterInput

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}

CustomerEvent = InteractionEvent | OutcomeEvent | Assignment

# State values (a stored context, a routing group's saved state) are JSON in one zstd frame (level
# 1, content size in the header).  Not thread-safe: each process uses them from its event loop.
_compress = zstandard.ZstdCompressor(level=1).compress
_decompress = zstandard.ZstdDecompressor().decompress
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first bytes of a zstd frame; a JSON document starts with "{"


def compress(raw: bytes) -> bytes:
    """*raw* in one zstd frame (level 1); :func:`decompressed` reads it back."""
    return _compress(raw)


def decompressed(stored: bytes) -> bytes:
    """The bytes :func:`compress` was given; a value that is not a zstd frame (plain JSON, written before) as it is.

    >>> decompressed(compress(b'{"a":1}')), decompressed(b'{"a":1}')
    (b'{"a":1}', b'{"a":1}')
    """
    return _decompress(stored) if stored[:4] == ZSTD_MAGIC else stored


class InvalidInput(ValueError):
    """A payload the engine cannot use.  ``error_type`` is one of a small fixed set."""

    def __init__(self, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason


def encode(record: Record) -> bytes:
    """A record as JSON bytes (with its ``type`` tag)."""
    return _encoder.encode(record)


def decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    return dec


def decode(raw: bytes | None, kind: type[T] | Any, max_bytes: int | None = None) -> T:
    """Decode and validate *raw* as *kind*, or raise :class:`InvalidInput`.

    >>> from cxstream.schemas import AdvisorEvent
    >>> decode(b'{"event_id":"e","occurred_at":1,"advisor_id":"a","kind":"login"}', AdvisorEvent).kind
    'login'
    >>> try: decode(b'{"event_id":"e"}', AdvisorEvent)
    ... except InvalidInput as e: print(e.error_type, "-", e.reason)
    invalid - Object missing required field `occurred_at`
    >>> try: decode(b'{"event_id":"\\xff"}', AdvisorEvent)
    ... except InvalidInput as e: print(e.error_type, "-", e.reason)
    not_utf8 - not UTF-8: byte 0 of a string is not valid UTF-8 (invalid start byte)
    """
    if raw is None:
        raise InvalidInput("empty", "the message has no value (null payload)")
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidInput("too_large", f"payload is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        return decoder(kind).decode(raw)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise InvalidInput("invalid", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput("not_json", f"not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:  # msgspec raises it for invalid UTF-8 inside a string
        raise InvalidInput("not_utf8", f"not UTF-8: byte {exc.start} of a string is not valid UTF-8 ({exc.reason})") from exc
    except RecursionError as exc:  # arrays/objects nested thousands deep, even in an unknown field
        raise InvalidInput("not_json", "not valid JSON: nested too deeply") from exc


def decode_customer_event(raw: bytes) -> CustomerEvent:
    """A record from ``cx.customer-events.v1`` (engine-written: trusted, still validated)."""
    return decoder(CustomerEvent).decode(raw)  # type: ignore[no-any-return]


def decode_router_input(raw: bytes) -> RouterInput:
    """A record from ``cx.routing.v1``."""
    return decoder(RouterInput).decode(raw)  # type: ignore[no-any-return]


def raw_text(raw: bytes | None) -> str:
    """A payload as text for a dead letter: UTF-8 if it is, else ``base64:...``.

    >>> raw_text(b"hi"), raw_text(b"\\xff")
    ('hi', 'base64:/w==')
    """
    if raw is None:
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")
