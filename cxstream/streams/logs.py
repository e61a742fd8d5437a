"""The engine's logging: one format, and no record payload in any log line, at any level.

Personal data lives in record values (identifiers, message text before redaction, outcome
attributes); the engine's own log lines never quote them.  Some libraries print whole records at
DEBUG (aiokafka's producer: ``Sending (key=... value=...)``); those loggers are held at INFO
whatever ``CX_LOG_LEVEL`` says.  ``tests/integration/test_no_pii.py`` runs an engine at DEBUG and
searches its whole output for the personal data it was sent.
"""

from __future__ import annotations

import logging

#: Loggers that print record keys or values at DEBUG.
PAYLOAD_LOGGERS: tuple[str, ...] = ("aiokafka.producer.producer",)


def configure_logging(level: str) -> None:
    """The root logger at *level* (``debug``, ``info``...), the payload loggers at INFO at the most verbose."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logging.getLogger().level))
