"""Where a running engine's servers are: ``{CX_DATA_DIR}/endpoints.json``, for commands run beside it.

The embedded broker and Redis listen on ports picked free at each start; ``cxstream run``
writes them here (with its pid) and removes the file when it stops, so ``cxstream replay``
finds the broker without being told.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cxstream.streams.settings import Settings

FILE = "endpoints.json"


def write_endpoints(settings: Settings, broker_url: str, redis_url: str) -> Path:
    """Record this engine's broker and Redis (and pid) under its data folder."""
    path = settings.path() / FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "broker_url": broker_url, "redis_url": redis_url}))
    tmp.replace(path)
    return path


def remove_endpoints(settings: Settings) -> None:
    """Forget them (the engine stopped)."""
    path = Path(settings.data_dir) / FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def running_endpoints(settings: Settings) -> dict[str, Any] | None:
    """The endpoints of the engine running on ``settings.data_dir``, or None if none runs there.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     s = Settings(data_dir=d)
    ...     _ = write_endpoints(s, "127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    ...     running_endpoints(s)["broker_url"]
    '127.0.0.1:9092'
    """
    try:
        found: dict[str, Any] = json.loads((Path(settings.data_dir) / FILE).read_text())
        os.kill(int(found["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found
