"""The environment of an engine subprocess pointed at given servers (benchmarks and integration tests)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def engine_env(
    broker: str,
    redis_url: str,
    data_dir: Path,
    *,
    prefix: str,
    app_id: str,
    http_port: int,
    api_key: str,
    partitions: int = 4,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``os.environ`` plus the ``CX_*`` settings that run ``cxstream run`` against *broker* and *redis_url*.

    Its own topic prefix and consumer group keep it apart from other engines on the same
    servers; *extra* settings override these.

    >>> env = engine_env("127.0.0.1:9", "redis://127.0.0.1:8/0", Path("/tmp/x"), prefix="t.", app_id="a",
    ...                  http_port=81, api_key="k", extra={"CX_PARTITIONS": "1"})
    >>> env["CX_TOPIC_PREFIX"], env["CX_PARTITIONS"], env["CX_HTTP_PORT"]
    ('t.', '1', '81')
    """
    return {
        **os.environ,
        "CX_BROKER_URL": broker,
        "CX_REDIS_URL": redis_url,
        "CX_TOPIC_PREFIX": prefix,
        "CX_APP_ID": app_id,
        "CX_DATA_DIR": str(data_dir),
        "CX_HTTP_PORT": str(http_port),
        "CX_API_KEYS": api_key,
        "CX_PARTITIONS": str(partitions),
        **(extra or {}),
    }
