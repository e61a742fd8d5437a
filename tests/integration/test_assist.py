"""Suggested knowledge on a real engine, broker and Redis: a completion that names the document used
teaches the live model, and a later similar contact gets that document suggested on the desk, with why."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from cxstream.schemas import AdvisorEvent
from cxstream.schemas.learning import ModelEvent
from cxstream.streams import topics as t
from tests.integration.conftest import RunningEngine, start_engine, stop_engine
from tests.integration.helpers import consume_until, read_to_end, wait_for
from tests.integration.test_desk_api import call, chat, desk_key, offer, uid

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def assist_engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    tag = uuid.uuid4().hex[:8]
    e = start_engine(
        servers[0], servers[1], tmp_path_factory.mktemp("assist"), f"a{tag}.", f"cxassist-{tag}",
        CX_SNAPSHOT_EVERY="1", CX_SNAPSHOT_INTERVAL_S="1",
    )
    yield e
    stop_engine(e)


def _handle(e: RunningEngine, advisor: str, key: str, group: str, text: str, disposition: dict[str, Any]) -> str:
    """A customer's chat, offered, accepted and completed with *disposition* once the context has the message."""
    contact = chat(e, group, f"{uid('c')}@example.org", text)
    a = offer(e, advisor, key, contact)
    assert call(e.http, f"/advisors/{advisor}/offers/{a['assignment_id']}/accept", "POST", key=key)[0] == 202
    wait_for(lambda: any(r.get("text") == text for r in call(e.http, f"/advisors/{advisor}/contacts/{contact}/context", key=key)[1].get("recent", [])), timeout=30)
    wait_for(lambda: any(w["contact_id"] == contact and w["status"] == "active" for w in call(e.http, f"/advisors/{advisor}/work", key=key)[1]["work"]), timeout=30)
    status, body = call(e.http, f"/advisors/{advisor}/contacts/{contact}/complete", "POST", disposition, key=key)
    assert status == 202, body
    assert body["disposition"].get("document") == disposition.get("document")
    return contact


def test_a_completion_naming_a_document_teaches_the_live_model(assist_engine: RunningEngine) -> None:
    e = assist_engine
    group, advisor = uid("g"), uid("ada")
    key = desk_key(e, advisor)
    assert call(e.http, f"/advisors/{advisor}/login", "POST", {"routing_group": group, "capacity": {"chat": 3}}, key=key)[0] == 202

    # before any completion names a document: nothing to suggest, and the answer says so
    first = chat(e, group, f"{uid('c')}@example.org", "my video was blocked by a copyright claim but it is fair use")
    a = offer(e, advisor, key, first)
    status, body = call(e.http, f"/advisors/{advisor}/contacts/{first}/suggestions", key=key)
    assert status == 200 and body["suggestions"] == [] and body["contact_id"] == first
    assert call(e.http, f"/advisors/{advisor}/contacts/{uid('nope')}/suggestions", key=key)[0] == 404
    assert call(e.http, f"/advisors/{advisor}/offers/{a['assignment_id']}/reject", "POST", key=key)[0] == 202

    _handle(e, advisor, key, group, "a copyright claim blocked my video, I think it is fair use",
            {"resolved": True, "intent": "copyright", "document": "kb-fair-use"})
    _handle(e, advisor, key, group, "I was charged twice for my subscription, please refund me",
            {"resolved": True, "intent": "billing", "document": "kb-refunds"})
    _handle(e, advisor, key, group, "how do I change the email address on my account", {"resolved": True, "intent": "account"})

    # the desk published the document with the completion (backward compatible: absent when not given)
    decode_adv = msgspec.json.Decoder(AdvisorEvent).decode
    done = [d for raw in asyncio.run(read_to_end(e.broker, e.topic(t.ADVISOR_EVENTS.name)))
            if (d := decode_adv(raw)).advisor_id == advisor and d.kind == "contact_completed"]
    assert sorted(str(d.disposition.document) for d in done if d.disposition) == ["None", "kb-fair-use", "kb-refunds"]

    # the learner learned both documents and published the assist model
    decode = msgspec.json.Decoder(ModelEvent).decode
    asyncio.run(consume_until(
        e.broker, e.topic(t.MODEL_EVENTS.name),
        lambda vs: any(v.model == "assist" and v.kind == "published" and v.labels_seen >= 2 for v in vs), decode, timeout=90,
    ))

    # a new customer with a similar problem: the desk suggests the document that resolved it, with why
    later = chat(e, group, f"{uid('c')}@example.org", "copyright claim on my video, it's fair use!")
    offer(e, advisor, key, later)

    def suggested() -> Any:
        status, body = call(e.http, f"/advisors/{advisor}/contacts/{later}/suggestions", key=key)
        assert status == 200, body
        return body if body["suggestions"] and body["documents_known"] >= 2 else None

    body = wait_for(suggested, timeout=60, interval=0.5)
    top = body["suggestions"][0]
    assert top["document"] == "kb-fair-use"
    assert {"copyright", "fair", "video"} <= set(top["matching_words"])
    assert (top["uses"], top["resolved"], top["similar_contacts"]) == (1, 1, 1)
    assert any("matching words" in w for w in top["why"]) and body["model_version"].startswith("assist-")
    assert "kb-fair-use" not in [s["document"] for s in body["suggestions"][1:]]  # each document once
    again = call(e.http, f"/advisors/{advisor}/contacts/{later}/suggestions", key=key)[1]  # the desk asks every 3 s
    assert again["cached"] is True and again["suggestions"] == body["suggestions"]
