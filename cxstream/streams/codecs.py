"""Bytes <-> records at the Kafka boundary (msgspec: validating and fast).

Decoding failures are translated into :class:`InvalidInput` with a machine
``error_type`` and a human ``reason`` that names the failing field path; the
ingest stage turns them into dead letters.
"""

from __future__ import annotations

import base64
from pathlib import Path
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
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first bytes of a zstd frame; a JSON document starts with "{"

# Stored contexts are compressed with a dictionary trained on contexts (bench/context/dictionary.py):
# a small JSON document alone has to spell out its field names again; with the dictionary a stored
# context is 35-45 % smaller, and faster to compress.  Each frame names its dictionary (its id in the
# frame header), so a dictionary once shipped is never replaced or deleted: a new one is added
# beside it (context-v2.zdict) and made the one written, and every one shipped stays readable.
# Contexts are compressed at level 3: on held-out contexts near their bounds the mean is 5.5 % and
# the p99 3.5 % smaller than at level 1, for the same ~22 µs each (19 % more with UUID ids); level 5
# saves 12 % for 2.3 times the time, level 9 19 % for 5.8 times.  A frame of any level reads the
# same (bench/context/dictionary.py --level; bench/results/context-levels*.json).
CONTEXT_LEVEL = 3
CONTEXT_DICTIONARIES = ("context-v1.zdict",)  # every dictionary shipped; the last is the one written
_dictionaries = [
    zstandard.ZstdCompressionDict((Path(__file__).parent / name).read_bytes(), dict_type=zstandard.DICT_TYPE_FULLDICT)
    for name in CONTEXT_DICTIONARIES
]
_compress_context = zstandard.ZstdCompressor(level=CONTEXT_LEVEL, dict_data=_dictionaries[-1]).compress
# a frame without a dictionary (dictionary id 0) reads with any of these: the plain reader is the dictionary's
_readers = {d.dict_id(): zstandard.ZstdDecompressor(dict_data=d).decompress for d in _dictionaries}
_read_current = _readers[_dictionaries[-1].dict_id()]
_frame_dictionary = zstandard.get_frame_parameters


def compress(raw: bytes) -> bytes:
    """*raw* in one zstd frame (level 1); :func:`decompressed` reads it back."""
    return _compress(raw)


def compress_context(raw: bytes) -> bytes:
    """A context's JSON in one zstd frame (level :data:`CONTEXT_LEVEL`) with the context dictionary; :func:`decompressed` reads it back.

    >>> doc = b'{"customer_id":"c1","recent":[],"open_contacts":{}}'
    >>> len(compress_context(doc)) < len(compress(doc)), decompressed(compress_context(doc)) == doc
    (True, True)
    """
    return _compress_context(raw)


def decompressed(stored: bytes) -> bytes:
    """The bytes :func:`compress` or :func:`compress_context` was given; a value that is not a zstd frame (plain JSON, written before) as it is.

    A frame compressed with a dictionary this engine does not ship raises :class:`InvalidInput`
    (``unknown_dictionary``): it was written by a newer engine.

    >>> decompressed(compress(b'{"a":1}')), decompressed(b'{"a":1}')
    (b'{"a":1}', b'{"a":1}')
    """
    if stored[:4] != ZSTD_MAGIC:
        return stored
    try:
        return _read_current(stored)
    except zstandard.ZstdError:
        dict_id = _frame_dictionary(stored).dict_id
        if dict_id and dict_id not in _readers:
            raise InvalidInput(
                "unknown_dictionary", f"a zstd frame compressed with dictionary {dict_id}, which this engine does not "
                f"ship ({', '.join(CONTEXT_DICTIONARIES)}): written by a newer engine"
            ) from None
        read = _readers.get(dict_id)
        if read is None or read is _read_current:
            raise  # a damaged frame
        return read(stored)


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
