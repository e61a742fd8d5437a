"""A seeded synthetic workload for load tests and ``cxstream bench pipeline`` (pure, deterministic).

:class:`Workload` turns a :class:`WorkloadConfig` into wire records of
:mod:`cxstream.schemas`, the same for the same seed, without I/O (except reading
the optional Banking77 texts once):

* ``customers`` customers with stable identifiers: CRM id ``C0000042``, email
  ``c42@example.com``, phone ``+44790000042``..., device id.  A share of them
  (``switch_share``) switch channel with a second identifier: on voice and SMS
  their channel system knows only their phone (sometimes phone + CRM id, after
  ID&V), so identity resolution has something to link;
* mixed channels (voice, chat, email, sms, web, social, app);
* messages with realistic text (``message_share`` of the generated events, at least a
  third of everything sent): Banking77 customer utterances read from
  ``$CX_SHARED_DATA_DIR/banking77/train.csv`` when present, else a small built-in list;
* a routable ``contact_opened`` with ``needs_advisor`` every ``contact_every`` events,
  followed by messages on that contact;
* page views, payment failures, surveys, business events; outcomes (CSAT, NPS,
  payments, churn/retained) on ``cx.outcomes.v1``;
* advisor logins (:meth:`Workload.advisor_logins`) and presence refreshes.

Desktop answers (accept, complete with a disposition, close) depend on which advisor
the engine picks, so they are not in the stream: the load generator answers each
assignment with :func:`cxstream.replay.desktop.respond`, which is seeded by the
assignment id.  Records carry ``occurred_at = 0``; the sender re-stamps the event
time at its planned send time (:meth:`cxstream.replay.recording.Planned.restamped`).
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cxstream.datasets import shared_data_dir
from cxstream.replay.recording import Input, Planned, plan
from cxstream.schemas import AdvisorEvent, Channel, Identifiers, InteractionEvent, OutcomeEvent

#: Used when the Banking77 file is not there (unit tests, a checkout without ../shared/data).
BUILTIN_TEXTS: tuple[str, ...] = (
    "My card still hasn't arrived, it's been two weeks",
    "I was charged twice for the same order, please refund",
    "The app keeps crashing when I open my statement",
    "I want to cancel my subscription, it is too expensive",
    "Can you help me reset my PIN?",
    "Why was my payment declined? This is really frustrating",
    "Thanks, that fixed it, great service!",
    "How do I top up my account with a bank transfer?",
    "There is a payment I don't recognise on my statement",
    "What is the exchange rate for a transfer to euros?",
    "I lost my card yesterday, please block it",
    "My transfer has been pending for three days",
    "Is there a fee for withdrawing cash abroad?",
    "I need to change my address",
    "The ATM swallowed my card",
    "Why hasn't my salary shown up yet?",
)

#: Channels on which a contact can be opened, with weights.
CONTACT_CHANNELS: tuple[tuple[str, float], ...] = (
    ("voice", 0.25), ("chat", 0.35), ("email", 0.15), ("sms", 0.1), ("social", 0.05), ("app", 0.1),
)
#: Channels of messages that are not on an open contact.
MESSAGE_CHANNELS: tuple[tuple[str, float], ...] = (
    ("chat", 0.35), ("email", 0.2), ("sms", 0.15), ("social", 0.15), ("app", 0.15),
)
SKILLS: tuple[str, ...] = ("billing", "card_issue", "tech_support", "cancel_service", "payments", "fraud")
LANGUAGES: tuple[str, ...] = ("en", "en", "en", "en", "fr", "de")


@dataclass(frozen=True)
class WorkloadConfig:
    """What the synthetic workload looks like.  Shares are of the generated stream."""

    customers: int = 10_000
    seed: int = 7
    advisors: int = 200
    routing_group: str = "default"
    #: A routable contact (``contact_opened``, ``needs_advisor``) every this many events.
    contact_every: int = 10
    #: Share of the remaining events that are messages with text (see the module doc).
    message_share: float = 0.5
    outcome_share: float = 0.06
    advisor_share: float = 0.02
    #: Customers who use a second identifier (their phone only) on voice and SMS.
    switch_share: float = 0.25
    #: Where the Banking77 texts are read from; ``None``: ``$CX_SHARED_DATA_DIR`` or ``../shared/data``.
    shared_data_dir: str | None = None
    #: At most this many texts are loaded (sampled deterministically).
    max_texts: int = 4000


def load_texts(config: WorkloadConfig) -> tuple[tuple[str, ...], str]:
    """(message texts, where they came from): Banking77 utterances, or the built-in list.

    >>> texts, source = load_texts(WorkloadConfig(shared_data_dir="/nonexistent"))
    >>> source, len(texts) == len(BUILTIN_TEXTS)
    ('builtin', True)
    """
    base = config.shared_data_dir or shared_data_dir()
    path = Path(base) / "banking77" / "train.csv"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            texts = [row["text"].strip() for row in csv.DictReader(f) if row.get("text", "").strip()]
    except (OSError, KeyError, csv.Error):
        return BUILTIN_TEXTS, "builtin"
    if not texts:
        return BUILTIN_TEXTS, "builtin"
    rng = random.Random(config.seed)
    if len(texts) > config.max_texts:
        texts = rng.sample(texts, config.max_texts)
    return tuple(t[:8000] for t in texts), str(path)


def customer_ref(c: int) -> str:
    """The CRM id of customer number *c* (what ``GET /customers/{id}/context`` is asked for).

    >>> customer_ref(42)
    'C0000042'
    """
    return f"C{c:07d}"


def identities(c: int) -> dict[str, str]:
    """Every identifier customer number *c* has (raw, as channel systems would send them).

    >>> identities(42)["phone"], identities(42)["email"]
    ('+447900000042', 'c42@example.com')
    """
    return {
        "customer_id": customer_ref(c),
        "email": f"c{c}@example.com",
        "phone": f"+4479{c:08d}",
        "device_id": f"dev-{c:07x}",
    }


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    x = rng.random() * sum(w for _, w in weighted)
    for name, w in weighted:
        x -= w
        if x <= 0:
            return name
    return weighted[-1][0]


class Workload:
    """The generator.  Every method is deterministic for the config (seed included)."""

    def __init__(self, config: WorkloadConfig = WorkloadConfig(), texts: tuple[str, ...] | None = None) -> None:
        if config.customers < 1:
            raise ValueError("customers must be >= 1")
        if config.contact_every < 2:
            raise ValueError("contact_every must be >= 2")
        self.config = config
        if texts is None:
            texts, self.text_source = load_texts(config)
        else:
            self.text_source = "given"
        self.texts = texts
        self._switch_salt = random.Random(config.seed ^ 0x5EED).getrandbits(32)

    # ------------------------------------------------------------------ customers
    def is_switcher(self, c: int) -> bool:
        """Does customer *c* show up on voice/SMS with their phone only?"""
        h = (c * 2654435761 + self._switch_salt) & 0xFFFFFFFF
        return h / 0x100000000 < self.config.switch_share

    def identifiers_on(self, c: int, channel: str, rng: random.Random) -> Identifiers:
        """What the channel system knows of customer *c* on *channel*."""
        ids = identities(c)
        if channel in ("voice", "sms"):
            if self.is_switcher(c):
                # phone only; after ID&V (a third of the time) also the CRM id: the link to merge on
                if rng.random() < 1 / 3:
                    return Identifiers(customer_id=ids["customer_id"], phone=ids["phone"])
                return Identifiers(phone=ids["phone"])
            return Identifiers(customer_id=ids["customer_id"], phone=ids["phone"])
        if channel == "email":
            return Identifiers(customer_id=ids["customer_id"], email=ids["email"])
        if channel in ("web", "app"):
            return Identifiers(customer_id=ids["customer_id"], device_id=ids["device_id"])
        if channel == "social":
            return Identifiers(customer_id=ids["customer_id"], social_handle=f"@cust{c}")
        return Identifiers(customer_id=ids["customer_id"], email=ids["email"])

    # ------------------------------------------------------------------ advisors
    def advisor_id(self, a: int) -> str:
        return f"adv-{a:04d}"

    def advisor_logins(self) -> list[AdvisorEvent]:
        """One login per advisor, with skills, languages and capacity (deterministic)."""
        rng = random.Random(self.config.seed * 7919 + 1)
        out = []
        for a in range(self.config.advisors):
            skills = {s: rng.randint(1, 5) for s in rng.sample(SKILLS, rng.randint(2, 4))}
            langs = sorted({"en", *rng.sample(("fr", "de", "es"), rng.randint(0, 1))})
            capacity: dict[Channel, int] = {"voice": 1, "chat": 3, "email": 5, "sms": 3, "social": 3, "app": 3, "web": 3}
            out.append(
                AdvisorEvent(
                    event_id=f"wl{self.config.seed}-login-{a}", occurred_at=0.0, advisor_id=self.advisor_id(a),
                    kind="login", presence="available", skills=skills, languages=langs, capacity=capacity,
                    routing_group=self.config.routing_group,
                )
            )
        return out

    # ------------------------------------------------------------------ streams
    def prefill(self, customers: range | None = None, at: float = 1.0) -> Iterator[InteractionEvent]:
        """One light event per customer (a logged-in page view), so the context table holds every customer."""
        for c in customers if customers is not None else range(self.config.customers):
            ids = identities(c)
            yield InteractionEvent(
                event_id=f"wl{self.config.seed}-pf-{c}", occurred_at=at, channel="web", kind="page_view",
                customer=Identifiers(customer_id=ids["customer_id"], email=ids["email"], device_id=ids["device_id"]),
                attributes={"page": "/account"},
            )

    def events(self, n: int | None = None, start: int = 0) -> Iterator[Input]:
        """The main stream (events *start* .. *start+n*; endless when *n* is None), deterministic.

        >>> w = Workload(WorkloadConfig(customers=100), texts=("hello",))
        >>> [e.kind for e in w.events(3)] == [e.kind for e in w.events(3)]
        True
        """
        cfg = self.config
        rng = random.Random(cfg.seed)
        open_contacts: list[tuple[int, str, str]] = []  # (customer, contact id, channel), most recent last
        i = 0
        while n is None or i < start + n:
            ev = self._next(i, rng, open_contacts)
            if i >= start:
                yield ev
            i += 1

    def _next(self, i: int, rng: random.Random, open_contacts: list[tuple[int, str, str]]) -> Input:
        cfg = self.config
        eid = f"wl{cfg.seed}-{i}"
        if i % cfg.contact_every == 0:
            c = rng.randrange(cfg.customers)
            channel = _pick(rng, CONTACT_CHANNELS)
            contact_id = f"k{cfg.seed}-{i}"
            open_contacts.append((c, contact_id, channel))
            if len(open_contacts) > 64:
                del open_contacts[0]
            skill = rng.choice(SKILLS)
            return InteractionEvent(
                event_id=eid, occurred_at=0.0, channel=channel, kind="contact_opened",  # type: ignore[arg-type]
                customer=self.identifiers_on(c, channel, rng), contact_id=contact_id, needs_advisor=True,
                language=rng.choice(LANGUAGES), routing_group=cfg.routing_group,
                priority=1 if rng.random() < 0.1 else 0,
                required_skills=[skill] if rng.random() < 0.5 else [],
            )
        x = rng.random()
        if x < cfg.message_share:
            text = rng.choice(self.texts)
            if open_contacts and rng.random() < 0.6:  # a message on a recently opened contact
                c, contact_id, channel = open_contacts[-1 - int(rng.random() * min(8, len(open_contacts)))]
                channel_ids = self.identifiers_on(c, channel, rng)  # voice: a transcribed utterance
                return InteractionEvent(
                    event_id=eid, occurred_at=0.0, channel=channel, kind="message",  # type: ignore[arg-type]
                    customer=channel_ids, contact_id=contact_id, text=text, routing_group=cfg.routing_group,
                )
            c = rng.randrange(cfg.customers)
            channel = _pick(rng, MESSAGE_CHANNELS)
            return InteractionEvent(
                event_id=eid, occurred_at=0.0, channel=channel, kind="message",  # type: ignore[arg-type]
                customer=self.identifiers_on(c, channel, rng), text=text, routing_group=cfg.routing_group,
            )
        x -= cfg.message_share
        if x < cfg.outcome_share:
            c = rng.randrange(cfg.customers)
            kind = rng.choice(("csat", "csat", "nps", "payment_failed", "retained", "churned", "complaint"))
            value = {"csat": float(rng.randint(1, 5)), "nps": float(rng.randint(0, 10)),
                     "payment_failed": round(rng.uniform(5, 500), 2)}.get(kind)
            return OutcomeEvent(
                event_id=eid, occurred_at=0.0, customer=Identifiers(customer_id=customer_ref(c)),
                kind=kind, value=value,  # type: ignore[arg-type]
            )
        x -= cfg.outcome_share
        if x < cfg.advisor_share:
            return AdvisorEvent(
                event_id=eid, occurred_at=0.0, advisor_id=self.advisor_id(rng.randrange(cfg.advisors)),
                kind="presence", presence="available", routing_group=cfg.routing_group,
            )
        c = rng.randrange(cfg.customers)
        y = rng.random()
        if y < 0.75:
            channel = "web" if rng.random() < 0.6 else "app"
            return InteractionEvent(
                event_id=eid, occurred_at=0.0, channel=channel, kind="page_view",  # type: ignore[arg-type]
                customer=self.identifiers_on(c, channel, rng),
                attributes={"page": rng.choice(("/", "/cards", "/payments", "/help", "/account", "/cancel"))},
            )
        if y < 0.85:
            return InteractionEvent(
                event_id=eid, occurred_at=0.0, channel="app", kind="payment_failed",
                customer=self.identifiers_on(c, "app", rng), attributes={"amount": round(rng.uniform(5, 500), 2)},
            )
        if y < 0.93:
            return InteractionEvent(
                event_id=eid, occurred_at=0.0, channel="email", kind="survey",
                customer=self.identifiers_on(c, "email", rng), attributes={"score": rng.randint(1, 5)},
            )
        return InteractionEvent(
            event_id=eid, occurred_at=0.0, channel="web", kind="business_event",
            customer=self.identifiers_on(c, "web", rng), attributes={"name": "order_shipped"},
        )

    def planned(self, n: int | None = None, start: int = 0) -> Iterator[Planned]:
        """:meth:`events` as publications (topic, key, value); re-stamp with ``Planned.restamped``."""
        for ev in self.events(n, start):
            yield plan(ev)


def mix(records: list[Input]) -> dict[str, float]:
    """Share of each record kind (``InteractionEvent.message``, ``AdvisorEvent.presence``...) in *records*.

    >>> mix([InteractionEvent(event_id="e", occurred_at=0, channel="chat", kind="message",
    ...      customer=Identifiers(email="a@b.co"))])
    {'InteractionEvent.message': 1.0}
    """
    counts = Counter(f"{type(r).__name__}.{r.kind}" for r in records)
    total = sum(counts.values()) or 1
    return {k: round(v / total, 4) for k, v in sorted(counts.items())}
