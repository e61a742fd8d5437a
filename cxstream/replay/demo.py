"""``cxstream run --demo``: a small bundled sample and simulated advisor desktops.

The sample (``samples/demo.jsonl``, written by :func:`generate_sample`, seeded) has
six advisors logging in and forty customers moving between web, chat, voice and
email with different identifiers, plus one malformed record that ends in the
dead-letter topic.  Simulated desktops accept each offer, handle the contact and
complete it, so queued contacts get assigned as advisors free up; an advisor who signs in on
``/desk`` under another name gets offers too, and answers them on the page.

Regenerate the sample with ``python -m cxstream.replay.demo``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from cxstream.bench.workload import BUILTIN_TEXTS
from cxstream.replay.desktop import respond
from cxstream.replay.recording import Input, read_recording, schedule, write_recording
from cxstream.schemas import AdvisorEvent, Assignment, Identifiers, InteractionEvent
from cxstream.schemas.common import Channel
from cxstream.streams import topics as t
from cxstream.streams.codecs import encode

if TYPE_CHECKING:
    from cxstream.engine import Wiring

SAMPLE = Path(__file__).parent / "samples" / "demo.jsonl"

_ADVISORS: list[tuple[str, dict[str, int], list[str], dict[Channel, int]]] = [
    ("ann", {"billing": 5, "card_issue": 3}, ["en"], {"voice": 1, "chat": 3, "email": 5}),
    ("bob", {"tech_support": 4, "billing": 2}, ["en", "fr"], {"voice": 1, "chat": 2}),
    ("chloe", {"cancel_service": 5, "billing": 3}, ["en", "fr"], {"voice": 1, "chat": 3, "email": 5}),
    ("dev", {"tech_support": 5, "card_issue": 4}, ["en"], {"chat": 3, "email": 5}),
    ("emma", {"card_issue": 5}, ["en", "de"], {"voice": 1, "chat": 2}),
    ("farid", {"billing": 4, "tech_support": 3}, ["en", "ar"], {"voice": 1, "chat": 3, "email": 3}),
]
_MESSAGES = BUILTIN_TEXTS[:7]


def generate_sample(seed: int = 7, customers: int = 40, start: float = 1_700_000_000.0) -> list[Any]:
    """The demo recording: advisor logins, then customers' journeys across channels (deterministic)."""
    rng = random.Random(seed)
    out: list[Any] = []
    for i, (name, skills, langs, cap) in enumerate(_ADVISORS):
        out.append(
            AdvisorEvent(
                event_id=f"demo-login-{name}", occurred_at=start + i * 0.1, advisor_id=name, kind="login",
                presence="available", skills=skills, languages=langs, capacity=cap,
            )
        )
    journeys: list[InteractionEvent] = []
    for c in range(customers):
        t = start + 1.0 + c * rng.uniform(0.8, 1.6)
        email = f"customer{c}@example.com"
        phone = f"+44 20 7946 {c:04d}"
        device = f"dev-{c:03d}"
        msg = rng.choice(_MESSAGES)
        ev = lambda n, c=c, **kw: InteractionEvent(event_id=f"demo-{c}-{n}", **kw)  # noqa: E731
        journeys.append(ev("view", occurred_at=t, channel="web", kind="page_view", customer=Identifiers(device_id=device, email=email)))
        first = rng.choice(["chat", "voice", "email"])
        ids = Identifiers(email=email) if first != "voice" else Identifiers(phone=phone, email=email)
        journeys.append(ev("open1", occurred_at=t + 0.5, channel=first, kind="contact_opened", customer=ids, contact_id=f"k{c}-1", needs_advisor=True, language="en"))
        journeys.append(ev("msg1", occurred_at=t + 0.6, channel=first, kind="message", customer=ids, contact_id=f"k{c}-1", text=msg))
        if rng.random() < 0.5:  # switches channel with another identifier
            t2 = t + rng.uniform(15, 30)
            second = "voice" if first != "voice" else "chat"
            ids2 = Identifiers(phone=phone, email=email)
            journeys.append(ev("open2", occurred_at=t2, channel=second, kind="contact_opened", customer=ids2, contact_id=f"k{c}-2", needs_advisor=True, language="en"))
            journeys.append(ev("msg2", occurred_at=t2 + 0.2, channel=second, kind="message", customer=ids2, contact_id=f"k{c}-2", text="Following up on my earlier message"))
    journeys.sort(key=lambda e: (e.occurred_at, e.event_id))
    out.extend(journeys)
    out.insert(len(out) // 2, {"topic": "cx.interactions.v1", "key": "bad", "value": '{"event_id": "demo-bad", "channel": "fax"}'})
    return out


def install_demo(wiring: Wiring) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """Register the simulated desktops on the app; returns (start the replay, stop the demo) callbacks."""
    topics = wiring.topics
    decode = msgspec.json.Decoder(Assignment).decode
    pending: set[asyncio.Task[None]] = set()

    async def desktop(a: Assignment) -> None:
        for step in respond(a):
            await asyncio.sleep(max(0.0, a.decided_at + step.after_s - time.time()))
            rec: Input = msgspec.structs.replace(step.record, occurred_at=time.time())
            target = topics.advisor_events if isinstance(rec, AdvisorEvent) else topics.interactions
            key = rec.advisor_id if isinstance(rec, AdvisorEvent) else a.customer_id
            await target.send(key=key.encode(), value=encode(rec))

    simulated = {name for name, *_ in _ADVISORS}

    async def desktops(stream: Any) -> None:
        async for raw in stream:
            a = decode(raw)
            if a.advisor_id not in simulated:
                continue  # a person signed in on /desk answers their own offers
            print(
                f"cxstream: assignment {a.assignment_id}: {a.channel} contact {a.contact_id} of {a.customer_id}"
                f" -> advisor {a.advisor_id} after {a.waited_s:.1f}s (score {a.score:.2f})",
                flush=True,
            )
            task = asyncio.ensure_future(desktop(a))
            pending.add(task)
            task.add_done_callback(pending.discard)

    wiring.app.agent(topics.assignments, name="cxstream.demo.desktops")(desktops)

    inputs = {  # the sample names the catalogue's topics; the engine's may carry a prefix
        t.INTERACTIONS.name: topics.interactions,
        t.ADVISOR_EVENTS.name: topics.advisor_events,
        t.OUTCOMES.name: topics.outcomes,
    }

    async def start_replay() -> None:
        async def run() -> None:
            await asyncio.sleep(2.0)  # let the consumer group settle
            records = read_recording(SAMPLE)
            print(f"cxstream: demo: replaying {len(records)} records from {SAMPLE.name}", flush=True)
            for wall, rec in schedule(records, speed=4.0, start=time.time()):
                await asyncio.sleep(max(0.0, wall - time.time()))
                rec = rec.restamped(time.time())
                await inputs[rec.topic].send(key=rec.key, value=rec.value)
            print("cxstream: demo: sample replayed; Ctrl-C stops the engine", flush=True)

        task = asyncio.ensure_future(run())
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def stop() -> None:
        for task in list(pending):
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    return start_replay, stop


if __name__ == "__main__":  # pragma: no cover
    SAMPLE.parent.mkdir(exist_ok=True)
    print(write_recording(SAMPLE, generate_sample()), "records written to", SAMPLE)
