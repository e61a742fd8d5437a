"""No personal data in the engine's logs, metric labels or dead-letter metadata.

A recording full of e-mail addresses, phone numbers and card numbers (in identifiers, message
text, outcome attributes, and malformed records whose validation errors would quote them) goes
through a running engine; then its whole output, its ``/metrics`` and every dead letter's
metadata (everything but the payload as received, ``raw``, which must be kept so nothing is
lost) are searched for each of them, in the forms they were sent and normalised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import msgspec
import pytest

from cxstream.schemas import AdvisorEvent, Identifiers, InteractionEvent, OutcomeEvent
from cxstream.schemas.outputs import DeadLetter
from cxstream.streams import topics as t
from tests.integration.conftest import RunningEngine, start_engine, stop_engine
from tests.integration.helpers import produce, read_to_end, wait_for
from tests.integration.test_pipeline import assignments_for, get, uid

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pii_engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    tag = uid("p")[-8:]
    e = start_engine(servers[0], servers[1], tmp_path_factory.mktemp("pii"), f"p{tag}.", f"cxpii-{tag}", CX_LOG_LEVEL="debug")
    yield e
    stop_engine(e)


def test_personal_data_reaches_no_log_no_metric_and_no_dead_letter_metadata(pii_engine: RunningEngine) -> None:
    e = pii_engine
    n = int(time.time() * 1000) % 1000
    email, email2 = f"Pii.Person{n}@Example.org", f"pii-other{n}@example.org"
    phone, e164 = f"+44 7700 900{n:03d}", f"+447700900{n:03d}"
    card = "5555 5555 5555 4444"
    group, advisor, contact = uid("g"), uid("adv"), uid("k")
    ids = Identifiers(email=email, phone=phone)
    now = time.time()
    good = [
        (b"a", AdvisorEvent(event_id=uid("l"), occurred_at=now, advisor_id=advisor, kind="login", routing_group=group,
                            presence="available", capacity={"chat": 2})),
        (b"c", InteractionEvent(event_id=uid("o"), occurred_at=now + 0.1, channel="chat", kind="contact_opened", customer=ids,
                                contact_id=contact, needs_advisor=True, routing_group=group)),
        (b"c", InteractionEvent(event_id=uid("m"), occurred_at=now + 0.2, channel="chat", kind="message", customer=ids, contact_id=contact,
                                text=f"card {card}, write to {email2} or call {phone}")),
    ]
    bad = [  # each quotes personal data where a validation message could repeat it
        (b"x", f'{{"type": "cx.InteractionEvent.v1", "event_id": "{uid("b")}", "occurred_at": {now}, "channel": "{email}", "kind": "message"}}'),
        (b"x", f'{{"type": "cx.InteractionEvent.v1", "event_id": "{uid("b")}", "occurred_at": "{phone}", "channel": "chat", "kind": "message"}}'),
        (b"x", f'{{"type": "cx.InteractionEvent.v1", "event_id": "{uid("b")}", "occurred_at": {now}, "channel": "chat", "kind": "{card}"}}'),
        (b"x", f'{{"type": "cx.InteractionEvent.v1", "event_id": "{uid("b")}", "occurred_at": {now}, "channel": "chat", "kind": "message", '
               f'"customer": {{"phone": "+44 12", "email": "{email2}@@"}}}}'),  # no usable identifier
        (b"x", f"not json at all: {email} {phone} {card}"),
    ]
    outcome = OutcomeEvent(event_id=uid("out"), occurred_at=now + 1, customer=Identifiers(email=email), kind="csat", value=4,
                           attributes={"note": f"called from {phone} about card {card}"})
    asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), [*good[1:], *bad]))
    asyncio.run(produce(e.broker, e.topic(t.ADVISOR_EVENTS.name), good[:1]))
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), [(b"o", outcome)]))

    assert len(assignments_for(e, group, 1)) == 1
    decode = msgspec.json.Decoder(DeadLetter).decode

    def letters() -> list[DeadLetter] | None:
        found = [decode(raw) for raw in asyncio.run(read_to_end(e.broker, e.topic(t.DEAD_LETTER.name)))]
        return found if len(found) >= len(bad) else None

    dead = wait_for(letters, timeout=30)
    assert len(dead) == len(bad), [d.reason for d in dead]
    wait_for(lambda: (ctx := get(e, f"/customers/email:{email.lower()}/context"))[0] == 200 and ctx[1].get("csat_count") == 1)
    status, metrics = get(e, "/metrics")
    assert status == 200

    forms = {email, email.lower(), email2, phone, e164, e164[1:], card, card.replace(" ", ""), "7700900"}
    metadata = [msgspec.json.encode(msgspec.structs.replace(d, raw="")).decode() for d in dead]
    places = {"engine output": e.output(), "metrics": metrics if isinstance(metrics, str) else metrics.decode(), **{
        f"dead letter {i} metadata": m for i, m in enumerate(metadata)}}
    leaks = {(where, form) for where, text in places.items() for form in forms if form.lower() in text.lower()}
    assert leaks == set(), sorted(leaks)
    # and the dead letters still carry the payloads, so nothing is lost
    assert any(email in d.raw for d in dead) and any(card in d.raw for d in dead)
