"""Build and publish dead letters: bad input becomes data, with coordinates and a reason."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import faust

from cxstream.context.redact import redact
from cxstream.schemas import DeadLetter
from cxstream.streams import metrics
from cxstream.streams.codecs import InvalidInput, encode, raw_text

log = logging.getLogger(__name__)


#: Bytes of a payload a dead letter keeps by default (``CX_DEAD_LETTER_MAX_RAW_BYTES``).
MAX_RAW_BYTES = 65536


def dead_letter_for(
    exc: InvalidInput, *, topic: str, partition: int, offset: int, agent: str, raw: bytes | None, key: bytes | None,
    max_raw: int = MAX_RAW_BYTES,
) -> DeadLetter:
    """The dead letter for an input that failed with *exc*.

    The reason is redacted (validation messages can quote values); the raw payload
    is kept as received, since the source topic holds it anyway, up to *max_raw* bytes:
    a payload near the broker's record limit, escaped into JSON (a control character
    takes 6 bytes, base64 4 for 3), would make a dead letter the broker refuses, and a
    dead letter that cannot be produced stops the stage.  A longer one keeps its start,
    with ``raw_truncated`` and its size in ``raw_bytes``; the key is cut the same way.

    >>> dl = dead_letter_for(InvalidInput("not_json", "bad"), topic="t", partition=0, offset=7,
    ...                      agent="ingest", raw=b"{", key=None)
    >>> (dl.offset, dl.error_type, dl.raw, dl.raw_bytes, dl.raw_truncated)
    (7, 'not_json', '{', 1, False)
    >>> dl = dead_letter_for(InvalidInput("too_large", "big"), topic="t", partition=0, offset=8,
    ...                      agent="ingest", raw="é".encode() * 10, key=None, max_raw=5)
    >>> (dl.raw, dl.raw_bytes, dl.raw_truncated)
    ('éé', 20, True)
    """
    size = len(raw) if raw is not None else 0
    if raw is not None and size > max_raw:
        raw = _utf8_prefix(raw, max_raw)
    if key is not None and len(key) > max_raw:
        key = _utf8_prefix(key, max_raw)
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        agent=agent,
        reason=redact(exc.reason)[:2000],
        error_type=exc.error_type,
        failed_at=time.time(),
        raw=raw_text(raw),
        key=raw_text(key) if key is not None else None,
        raw_bytes=size,
        raw_truncated=raw is not None and len(raw) < size,
    )


def _utf8_prefix(data: bytes, limit: int) -> bytes:
    """At most *limit* bytes of *data*, not cutting a UTF-8 character in two (if it is UTF-8)."""
    cut = data[:limit]
    for back in range(4):  # a UTF-8 character is at most 4 bytes
        try:
            (cut[: len(cut) - back] if back else cut).decode("utf-8")
        except UnicodeDecodeError:
            continue
        return cut[: len(cut) - back] if back else cut
    return cut


#: At most this many dead letters are logged one by one per LOG_WINDOW_S; the others are summed up in one line.
LOG_BURST = 20
LOG_WINDOW_S = 10.0
_log_window = [0.0, 0, 0]  # window start (monotonic), logged in it, not logged in it


def _log_this_one() -> bool:
    """True while the current window has logged fewer than LOG_BURST dead letters; says how many it skipped."""
    now = time.monotonic()
    if now - _log_window[0] >= LOG_WINDOW_S:
        if _log_window[2]:
            log.warning("%d more dead letters in the last %.0f s, not logged one by one (cx_dead_letters_total counts every one)",
                        _log_window[2], now - _log_window[0])
        _log_window[:] = [now, 0, 0]
    if _log_window[1] < LOG_BURST:
        _log_window[1] += 1
        return True
    _log_window[2] += 1
    return False


def count_dead_letter(letter: DeadLetter) -> None:
    """Count a dead letter (as an input outcome and as a dead letter) and log it (its reason is already redacted).

    A flood of bad input is logged as its first LOG_BURST letters and a count per LOG_WINDOW_S:
    one log line per letter was most of the cost of a dead letter (the letters themselves are
    all on the dead-letter topic, and counted)."""
    metrics.EVENTS_IN.labels(letter.source_topic, "dead_letter").inc()
    metrics.DEAD_LETTERS.labels(letter.source_topic, letter.error_type, letter.agent).inc()
    if not _log_this_one():
        return
    log.warning(
        "dead letter from %s[%d]@%d by %s: %s (%s)",
        letter.source_topic,
        letter.partition,
        letter.offset,
        letter.agent,
        letter.reason,
        letter.error_type,
    )


async def send_dead_letter(dead_letters: faust.TopicT, letter: DeadLetter) -> None:
    """Publish a dead letter (key = source topic) and count it."""
    count_dead_letter(letter)
    await dead_letters.send(key=letter.source_topic.encode(), value=encode(letter))


EventHandler = Callable[[faust.EventT], Awaitable[None]]


async def process_events(stream: faust.StreamT[bytes], agent: str, dead_letters: faust.TopicT, handle: EventHandler) -> None:
    """Run *handle* on every event of *stream*; whatever it cannot handle becomes a dead letter.

    :class:`InvalidInput` is bad input; any other exception is a processing error
    (a bug or a broken dependency), logged with its traceback.  Either way the
    record is published to the dead-letter topic with its coordinates and the
    stream goes on: never a crash loop, never a silent drop.
    """
    async for event in stream.events():
        started = time.perf_counter()
        try:
            await handle(event)
        except InvalidInput as exc:
            await _dead_letter(dead_letters, event, agent, exc)
        except Exception as exc:
            log.exception("%s failed on a record; sending it to the dead-letter topic", agent)
            await _dead_letter(dead_letters, event, agent, InvalidInput("processing_error", f"{type(exc).__name__}: {exc}"))
        else:
            metrics.STAGE_SECONDS.labels(agent).observe(time.perf_counter() - started)


async def _dead_letter(dead_letters: faust.TopicT, event: faust.EventT, agent: str, exc: InvalidInput) -> None:
    tp = event.message.tp
    letter = dead_letter_for(
        exc, topic=tp.topic, partition=tp.partition, offset=event.message.offset, agent=agent, raw=event.value, key=event.key
    )
    await send_dead_letter(dead_letters, letter)
