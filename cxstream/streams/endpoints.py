"""Where a running engine's servers are: ``{CX_DATA_DIR}/endpoints.json``, for commands run beside it.

The embedded broker and Redis listen on ports picked free at each start; ``cxstream run``
writes them here (with the HTTP API's address once it serves, and the engine's pid and
process start time) and removes the file when it stops, so ``cxstream replay`` and
``cxstream serve`` find them without being told.  The file is readable by every user who
can read the data folder (mode 0644).  After a ``kill -9`` the file stays behind: it is
stale when its pid is gone or now names another process (a different start time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cxstream.streams.settings import Settings

FILE = "endpoints.json"


class NoRunningEngine(LookupError):
    """No engine runs on this data folder; the message says what was found and what to do."""


def _started(pid: int) -> int | None:
    """Process *pid*'s start time, in clock ticks since boot (Linux ``/proc``); None where unknown."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def path_of(settings: Settings) -> Path:
    """The endpoints file of *settings*' data folder (absolute: for messages)."""
    return Path(settings.data_dir).resolve() / FILE


def write_endpoints(settings: Settings, broker_url: str, redis_url: str, **more: Any) -> Path:
    """Record this engine's broker and Redis (and pid) under its data folder; never a password (the file is 0644).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = write_endpoints(Settings(data_dir=d), "k:9093", "rediss://cx:s3cret@r:6380/0")
    ...     json.loads(path.read_text())["redis_url"]
    'rediss://cx@r:6380/0'
    """
    path = settings.path() / FILE
    _write(path, {"pid": os.getpid(), "started": _started(os.getpid()), "broker_url": broker_url,
                  "redis_url": without_password(redis_url), **more})
    return path


def without_password(url: str) -> str:
    """*url* with its password left out (a command beside the engine takes it from CX_REDIS_PASSWORD(_FILE)).

    >>> without_password("redis://:pw@127.0.0.1:6379/0"), without_password("redis://127.0.0.1:6379/0")
    ('redis://127.0.0.1:6379/0', 'redis://127.0.0.1:6379/0')
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.chmod(0o644)  # other users of the same data folder read it too, whatever this process's umask
    tmp.replace(path)


def update_endpoints(settings: Settings, **more: Any) -> None:
    """Add to this engine's record (e.g. ``http_url`` once the API serves)."""
    path = Path(settings.data_dir) / FILE
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if found.get("pid") == os.getpid():
        _write(path, {**found, **more})


def remove_endpoints(settings: Settings) -> None:
    """Forget them (the engine stopped)."""
    path = Path(settings.data_dir) / FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(found: dict[str, Any]) -> bool:
    pid = int(found["pid"])
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # alive, another user's: the data folder is shared
    except ProcessLookupError:
        return False
    started = found.get("started")
    return started is None or _started(pid) in (None, started)  # not a new process that reuses the pid


def engine_endpoints(settings: Settings) -> dict[str, Any]:
    """The endpoints of the engine running on ``settings.data_dir``; raises :class:`NoRunningEngine` if none runs.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     s = Settings(data_dir=d)
    ...     _ = write_endpoints(s, "127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    ...     engine_endpoints(s)["broker_url"]
    '127.0.0.1:9092'
    """
    path = path_of(settings)
    try:
        found: dict[str, Any] = json.loads(path.read_text())
        pid = int(found["pid"])
    except FileNotFoundError:
        raise NoRunningEngine(
            f"no engine is running on the data folder {path.parent} (no {path}): start one there ('make run'), "
            "or set CX_DATA_DIR to the data folder of the one that runs"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NoRunningEngine(f"cannot read {path}: {exc}") from None
    if not _alive(found):
        raise NoRunningEngine(
            f"the engine that wrote {path} (pid {pid}) is not running any more (stopped without cleaning up, "
            "e.g. kill -9): start it again ('make run')"
        )
    return found


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
        return engine_endpoints(settings)
    except NoRunningEngine:
        return None
