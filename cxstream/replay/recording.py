"""Recordings: JSONL files of input records, as the engine's input topics would carry them.

Each line is either

* an input record, as a channel system publishes it (the README's example is one): it goes
  to that record's input topic, keyed by its customer identifier or advisor id.  Its ``type``
  tag (``cx.InteractionEvent.v1``, ``cx.AdvisorEvent.v1``, ``cx.OutcomeEvent.v1``) is
  optional, as on the input topics themselves: without one, a record with an ``advisor_id``
  is an ``AdvisorEvent``, one with a ``channel`` an ``InteractionEvent``, any other an
  ``OutcomeEvent``; or
* an envelope ``{"topic": NAME, "key": STR|null, "value": ANY}``: *value* is sent
  as is (a string verbatim, anything else as JSON) — for recording malformed input.

A record may also be spread over several lines (pretty-printed JSON, as in the README): a
line whose JSON is not finished continues on the next ones.  Blank lines and lines starting
with ``#`` are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import orjson

from cxstream.schemas import AdvisorEvent, InteractionEvent, OutcomeEvent
from cxstream.streams import topics as t

Input = InteractionEvent | AdvisorEvent | OutcomeEvent
_decoder = msgspec.json.Decoder(Input)
_untagged: dict[type[Input], msgspec.json.Decoder[Input]] = {
    kind: msgspec.json.Decoder(kind) for kind in (InteractionEvent, AdvisorEvent, OutcomeEvent)
}
#: The most lines one record may span (a line left unfinished by mistake does not swallow the file).
MAX_RECORD_LINES = 200
_encoder = msgspec.json.Encoder()
_TOPIC = {InteractionEvent: t.INTERACTIONS.name, AdvisorEvent: t.ADVISOR_EVENTS.name, OutcomeEvent: t.OUTCOMES.name}


class RecordingError(ValueError):
    """A line of a recording that is neither an input record nor an envelope."""


class UnfinishedRecord(RecordingError):
    """The JSON of a line ends before its value does: it may go on on the next line."""


def record_type(obj: dict[str, object]) -> type[Input]:
    """The input record a JSON object without a ``type`` tag is.

    >>> record_type({"advisor_id": "ann", "kind": "login"}).__name__, record_type({"channel": "chat"}).__name__
    ('AdvisorEvent', 'InteractionEvent')
    >>> record_type({"kind": "csat", "customer": {"email": "a@b.co"}}).__name__
    'OutcomeEvent'
    """
    if "advisor_id" in obj:
        return AdvisorEvent
    return InteractionEvent if "channel" in obj else OutcomeEvent


@dataclass(frozen=True)
class Planned:
    """One record to publish: where, with what key, and its event time (if it has one)."""

    topic: str
    key: bytes | None
    value: bytes
    at: float | None
    record: Input | None = None

    def restamped(self, at: float) -> Planned:
        """The same record with its event time set to *at* (envelopes are unchanged)."""
        if self.record is None:
            return self
        record = msgspec.structs.replace(self.record, occurred_at=at)
        return Planned(self.topic, self.key, _encoder.encode(record), at, record)


def key_for(record: Input) -> bytes:
    """The partitioning key a channel system would use.

    >>> from cxstream.schemas import Identifiers
    >>> key_for(OutcomeEvent(event_id="e", occurred_at=1, kind="csat", customer=Identifiers(email="a@b.co")))
    b'a@b.co'
    """
    if isinstance(record, AdvisorEvent):
        return record.advisor_id.encode()
    ids = record.customer.present()
    return next(iter(ids.values()), "").encode()


def plan(record: Input) -> Planned:
    """A typed record as a planned publication."""
    return Planned(_TOPIC[type(record)], key_for(record), _encoder.encode(record), record.occurred_at, record)


def parse_line(line: str | bytes, where: str = "line") -> Planned | None:
    """Parse one JSONL line (or the lines of one record); ``None`` for blank and comment lines.

    >>> parse_line('{"event_id": "e", "occurred_at": 1, "advisor_id": "ann", "kind": "login"}').topic
    'cx.advisor-events.v1'
    """
    text = line.decode() if isinstance(line, bytes) else line
    if not text.strip() or text.lstrip().startswith("#"):
        return None
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        error = UnfinishedRecord if exc.msg.startswith("unexpected end of data") else RecordingError
        raise error(f"{where}: not JSON: {exc}") from exc
    if isinstance(obj, dict) and "topic" in obj and "value" in obj:
        value = obj["value"]
        raw = value.encode() if isinstance(value, str) else orjson.dumps(value)
        key = obj.get("key")
        return Planned(str(obj["topic"]), key.encode() if isinstance(key, str) else None, raw, obj.get("at"))
    if isinstance(obj, dict) and "type" not in obj:
        kind = record_type(obj)
        try:
            return plan(_untagged[kind].decode(text))
        except msgspec.ValidationError as exc:
            raise RecordingError(f"{where}: not an input record or envelope (read as {kind.__name__}, having no 'type'): {exc}") from exc
    try:
        return plan(_decoder.decode(text))
    except msgspec.ValidationError as exc:
        raise RecordingError(f"{where}: not an input record or envelope: {exc}") from exc


def read_recording(path: str | Path) -> list[Planned]:
    """Every record of a recording file, in file order (a record may span lines: the module's docstring)."""
    out = []
    with Path(path).open("rb") as f:
        pending, first = b"", 0
        for n, line in enumerate(f, 1):
            if not pending:
                first = n
            text = pending + line
            try:
                p = parse_line(text, f"{path}:{first}")
            except UnfinishedRecord:
                if n - first + 1 >= MAX_RECORD_LINES:
                    raise
                pending = text
                continue
            pending = b""
            if p is not None:
                out.append(p)
        if pending:
            parse_line(pending, f"{path}:{first}")  # raises: the file ends inside a record
    return out


def write_recording(path: str | Path, records: Iterable[Input | dict[str, object]]) -> int:
    """Write records (typed, or envelope dicts) as JSONL; returns the count."""
    n = 0
    with Path(path).open("wb") as f:
        for r in records:
            f.write(orjson.dumps(r) if isinstance(r, dict) else _encoder.encode(r))
            f.write(b"\n")
            n += 1
    return n


def schedule(records: list[Planned], speed: float, start: float) -> Iterator[tuple[float, Planned]]:
    """(planned wall time, record) pairs: event-time gaps divided by *speed*; ``speed=0``: no waiting.

    >>> p = [Planned("t", None, b"{}", 100.0), Planned("t", None, b"{}", 104.0)]
    >>> [w for w, _ in schedule(p, 2.0, 1000.0)]
    [1000.0, 1002.0]
    """
    t0 = next((r.at for r in records if r.at is not None), None)
    for r in records:
        if speed <= 0 or t0 is None or r.at is None:
            yield start, r
        else:
            yield start + max(0.0, r.at - t0) / speed, r
