"""Adapter: the IBM Twitter customer-care conversations as multi-channel customer journeys.

Source: ``{CX_SHARED_DATA_DIR}/twitter_customer_care_ibm/dev.json`` (525 real conversations
between customers and 25 brands' support accounts, 2020; see the folder's PROVENANCE.md).
Read from there, never copied.

Each conversation becomes one *social* contact of the customer (identified by their
Twitter handle): the customer's tweets are inbound messages (real text, real PII that
the engine must redact), the brand's replies outbound ones, and the help document the
brand finally linked is the contact's intent as the channel reports it
(``attributes.intent = "{company}:doc{doc_id}"``).  Then, as support accounts ask
("DM us your email"), the customer follows up by **email**: a second contact on another
channel with a different identifier (a synthetic address derived from the handle).
Every other follow-up carries the handle too (the link arrives with the first email);
the others link only in a later message (a new customer first, then a merge).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

from cxstream.replay.journeys import Contact, Journey, Step

TWITTER_FILE = "twitter_customer_care_ibm/dev.json"


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def load_conversations(data_dir: str | Path) -> list[dict]:  # type: ignore[type-arg]
    path = Path(data_dir) / TWITTER_FILE
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def twitter_journeys(data_dir: str | Path, limit: int | None = None) -> list[Journey]:
    """One journey per customer handle: their social conversations, then an email follow-up."""
    convs = load_conversations(data_dir)
    by_handle: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for conv in convs:
        turns = conv.get("dialogContent") or []
        handle = next((t["client"] for t in turns if "client" in t), None)
        if handle:
            by_handle.setdefault(handle, []).append(conv)
    journeys = []
    for i, (handle, items) in enumerate(sorted(by_handle.items())):
        if limit is not None and i >= limit:
            break
        person = f"tw-{hashlib.sha256(handle.encode()).hexdigest()[:10]}"
        ids = {"social_handle": f"@{handle}", "email": f"{handle.lower()}.{person[-4:]}@mail.example.net"}
        contacts = []
        last_at = 0.0
        for k, conv in enumerate(sorted(items, key=lambda c: c["dialogHeader"]["conversationDateTime"])):
            company = conv["dialogHeader"]["company"]
            intent = f"{company}:doc{conv.get('agentURL', {}).get('doc_id', '?')}"
            steps = []
            for turn in conv["dialogContent"]:
                at = _ts(turn["datetime"])
                inbound = "client" in turn
                steps.append(Step(at=at, text=turn.get("message") or "", inbound=inbound))
                last_at = max(last_at, at)
            url = conv.get("agentURL") or {}
            if url.get("url_utterance"):
                last_at += 60
                steps.append(Step(at=last_at, text=url["url_utterance"], inbound=False))
            contacts.append(Contact(
                contact_id=f"{person}-tw{k}", channel="social", ids={"social_handle": ids["social_handle"]},
                intent=intent, steps=steps, opened_at=steps[0].at if steps else last_at,
            ))
        follow_at = last_at + 3600
        late = i % 2 == 1
        contacts.append(Contact(
            contact_id=f"{person}-mail", channel="email",
            ids={"email": ids["email"]} if late else {"email": ids["email"], "social_handle": ids["social_handle"]},
            link_ids={"email": ids["email"], "social_handle": ids["social_handle"]} if late else None,
            intent=None, opened_at=follow_at,
            steps=[Step(at=follow_at + 1, text="Following up by email as you asked, here are my details.", inbound=True),
                   Step(at=follow_at + 2, text="Thanks, we have linked your case.", inbound=False)],
        ))
        journeys.append(Journey(person=person, source="twitter", contacts=contacts, identifiers=ids))
    return journeys
