"""Where the public datasets are read from: one place, one setting.

``CX_SHARED_DATA_DIR`` (the ``shared_data_dir`` setting), else ``../shared/data`` beside the
repository root, whatever the working directory.  ``CX_DATA_DIR`` is the engine's own data
directory and is not read for datasets.  Datasets are read in place, never copied.
"""

from __future__ import annotations

import os
from pathlib import Path

_BESIDE_REPO = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path:
    """``$CX_SHARED_DATA_DIR``, else ``<repo>/../shared/data``."""
    env = os.environ.get("CX_SHARED_DATA_DIR")
    return Path(env) if env else _BESIDE_REPO
