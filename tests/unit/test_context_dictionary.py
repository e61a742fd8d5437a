"""Stored contexts are compressed with a shipped zstd dictionary; everything written before still reads."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import zstandard

from cxstream.context.model import CustomerContext, context_json, decode_context, encode_context
from cxstream.streams import codecs
from cxstream.streams.codecs import InvalidInput, compress, compress_context, decompressed

# A context frame written with context-v1.zdict (dictionary id 175630177).  If this stops reading,
# the shipped dictionary was replaced: add a new one beside it instead (codecs.CONTEXT_DICTIONARIES).
# It was written at level 1, as contexts were until December 6 (since then at codecs.CONTEXT_LEVEL).
V1_FRAME = bytes.fromhex(
    "28b52ffd2361e7770a624d010063010499492652ffdac8f9da14c57424c29c1307fc1a5e4324e5ad796ddb5cc95d213d23908e57a108"
)
V1_JSON = b'{"customer_id":"c42","recent":[{"kind":"message","channel":"chat","text":"my card was declined"}]}'


def test_a_context_written_with_the_first_dictionary_reads_forever() -> None:
    assert zstandard.get_frame_parameters(V1_FRAME).dict_id == 175630177
    assert decompressed(V1_FRAME) == V1_JSON


def test_a_stored_context_uses_the_dictionary_and_reads_back() -> None:
    ctx = CustomerContext(customer_id="c1", created_at=1.0, updated_at=2.0, preferred_channel="chat")
    stored = encode_context(ctx)
    assert zstandard.get_frame_parameters(stored).dict_id == codecs._dictionaries[-1].dict_id()
    assert decode_context(stored) == ctx
    assert len(stored) < len(compress(context_json(stored)))  # what the dictionary is for


def test_values_written_before_the_dictionary_still_read() -> None:
    """A frame without a dictionary (stored contexts until December 5, and the router's saved state) and plain JSON."""
    assert decompressed(compress(V1_JSON)) == V1_JSON
    assert decompressed(V1_JSON) == V1_JSON


def test_a_frame_of_a_dictionary_not_shipped_is_a_clear_error() -> None:
    other = zstandard.train_dictionary(2048, [b'{"x":%d,"name":"someone %d","kind":"other"}' % (i, i) for i in range(500)])
    frame = zstandard.ZstdCompressor(dict_data=other).compress(V1_JSON)
    with pytest.raises(InvalidInput, match=f"dictionary {other.dict_id()}.*written by a newer engine") as err:
        decompressed(frame)
    assert err.value.error_type == "unknown_dictionary"


def test_a_damaged_frame_is_not_read_as_something_else() -> None:
    frame = bytearray(compress_context(V1_JSON * 3))
    frame[-6:] = b"\x00" * 6
    with pytest.raises(zstandard.ZstdError):
        decompressed(bytes(frame))


def test_every_shipped_dictionary_is_in_the_package() -> None:
    root = Path(codecs.__file__).parent
    assert all((root / name).is_file() for name in codecs.CONTEXT_DICTIONARIES)
    pyproject = tomllib.loads((root.parents[1] / "pyproject.toml").read_text())
    assert "streams/*.zdict" in pyproject["tool"]["setuptools"]["package-data"]["cxstream"]
