"""Optional encoders: the safetensors reader (numpy only) and, when installed, WordLlama."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from cxstream.intel.encoder import ENCODER_PARAMS, load_encoder, read_safetensors


def test_read_safetensors_roundtrip(tmp_path: Path) -> None:
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    b = np.array([1, -2], dtype=np.int8)
    raw_a, raw_b = a.tobytes(), b.tobytes()
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, len(raw_a)]},
        "b": {"dtype": "I8", "shape": [2], "data_offsets": [len(raw_a), len(raw_a) + len(raw_b)]},
    }
    hdr = json.dumps(header).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", len(hdr)) + hdr + raw_a + raw_b)
    out = read_safetensors(path)
    assert set(out) == {"a", "b"}
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)


def test_unknown_encoder_name() -> None:
    with pytest.raises(ValueError, match="unknown encoder"):
        load_encoder("nope")
    assert set(ENCODER_PARAMS) >= {"wordllama", "use", "minilm"}


@pytest.mark.encoder
@pytest.mark.parametrize(("name", "dim"), [("wordllama", 256), ("use", 512)])
def test_optional_encoder(name: str, dim: int) -> None:
    """Needs the optional extra: ``make test-encoder`` installs it and runs this test."""
    enc = load_encoder(name)
    assert enc is not None
    v = enc("my card has not arrived")
    assert v.shape == (dim,) and v.dtype == np.float32
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-4
    assert float(v @ enc("my card hasn't arrived yet")) > float(v @ enc("what is the exchange rate"))
    if name == "wordllama":
        assert not enc("").any()
