"""Customer journeys across channels: the data model, a deterministic generator, and their events.

A :class:`Journey` is one real person's sequence of contacts; every contact after the
first is on another channel *with another identifier* (email for chat and email, phone
for voice and SMS, handle for social, device or CRM id for the app).  The link to what
is already known arrives either with the contact's first event (an authenticated
channel: *direct*) or only in a later message (an IVR or agent verification: *late*,
so the engine first sees a stranger and must merge).

The generated set (:func:`generate_journeys`) also carries traps that must **not** merge
people: placeholder values (``0000000000``, ``noreply@…``, ``null``), a switchboard
number used by many CRM customers, landlines shared by two CRM customers, and devices
shared by two people.  Everything is seeded: the same seed gives the same journeys.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from cxstream.schemas import Identifiers, InteractionEvent

CHANNEL_ID = {"chat": "email", "email": "email", "voice": "phone", "sms": "phone", "social": "social_handle", "app": "device_id"}

INTENTS: dict[str, list[str]] = {
    "card_lost": ["I lost my card yesterday, please block it", "my card is gone, I think it was stolen", "still no replacement card, this is really frustrating"],
    "double_charge": ["I was charged twice for the same order", "there are two identical payments on my statement", "the duplicate charge is still not refunded, terrible service"],
    "cancel_contract": ["I want to cancel my contract", "how do I end my subscription?", "please close my account, I am done"],
    "address_change": ["I moved, how do I change my address?", "please update my postal address", "my new address is still not showing"],
    "delivery_late": ["my parcel has not arrived", "the delivery is a week late", "where is my order? nobody answers"],
    "login_problem": ["I cannot log in to the app", "password reset does not work", "still locked out of my account, awful"],
    "upgrade": ["I would like to upgrade my plan", "what does the premium tier cost?", "great, please go ahead with the upgrade, thanks!"],
}
THANKS = ["thanks, that helps", "ok, thank you!", "great, much appreciated", "fine"]


@dataclass
class Step:
    at: float
    text: str
    inbound: bool = True


@dataclass
class Contact:
    contact_id: str
    channel: str
    ids: dict[str, str]  # carried by every event of the contact
    opened_at: float
    steps: list[Step]
    intent: str | None = None  # reported by the channel on the first inbound message
    link_ids: dict[str, str] | None = None  # a late verification message carries these
    lookup: tuple[str, str] | None = None  # the identifier to look the context up by (default: the channel's)

    def lookup_identifier(self) -> tuple[str, str]:
        if self.lookup is not None:
            return self.lookup
        kind = CHANNEL_ID.get(self.channel)
        if kind and kind in self.ids:
            return kind, self.ids[kind]
        kind = next(iter(self.ids))
        return kind, self.ids[kind]


@dataclass
class Journey:
    person: str
    source: str
    contacts: list[Contact]
    identifiers: dict[str, str] = field(default_factory=dict)  # the person's own values (not shared ones)


def contact_events(c: Contact, junk: dict[str, str] | None = None) -> list[InteractionEvent]:
    """The interaction events of one contact, in order."""
    ids = Identifiers(**{**{k: v for k, v in (junk or {}).items() if k not in c.ids}, **c.ids})
    out = [InteractionEvent(event_id=f"{c.contact_id}-open", occurred_at=c.opened_at, channel=c.channel, kind="contact_opened",  # type: ignore[arg-type]
                            customer=ids, contact_id=c.contact_id)]
    intent_sent = False
    for i, s in enumerate(c.steps):
        attrs: dict[str, str | int | float | bool] = {}
        if s.inbound and c.intent and not intent_sent:
            attrs["intent"] = c.intent
            intent_sent = True
        out.append(InteractionEvent(
            event_id=f"{c.contact_id}-m{i}", occurred_at=s.at, channel=c.channel, kind="message", customer=ids,  # type: ignore[arg-type]
            contact_id=c.contact_id, text=s.text[:8000] or None, direction="inbound" if s.inbound else "outbound", attributes=attrs,
        ))
    last = max([c.opened_at, *(s.at for s in c.steps)])
    if c.link_ids:
        out.append(InteractionEvent(
            event_id=f"{c.contact_id}-verify", occurred_at=last + 1, channel=c.channel, kind="message",  # type: ignore[arg-type]
            customer=Identifiers(**c.link_ids), contact_id=c.contact_id, text="identity verified", direction="outbound",
        ))
    out.append(InteractionEvent(event_id=f"{c.contact_id}-close", occurred_at=last + 2, channel=c.channel, kind="contact_closed",  # type: ignore[arg-type]
                                customer=ids, contact_id=c.contact_id, attributes={"resolved": False}))
    return out


def generate_journeys(n: int, seed: int = 7, start: float = 1_767_225_600.0) -> list[Journey]:
    """*n* people, 3 to 4 contacts each, on different channels with different identifiers; with traps."""
    rnd = random.Random(seed)
    switchboard = "+442079460000"
    journeys: list[Journey] = []
    for p in range(n):
        person = f"gen-{p:05d}"
        own = {
            "email": f"person{p}.{rnd.randrange(10**6)}@mail.example.com",
            "phone": f"+4477{rnd.randrange(10**8):08d}",
            "social_handle": f"@person_{p}_{rnd.randrange(10**4)}",
            "device_id": f"dev-{p}-{rnd.randrange(10**8):x}",
        }
        crm = p % 2 == 0
        if crm:
            own["customer_id"] = f"CRM-{p:06d}"
        channels: list[str] = []
        kinds_used: list[str] = []
        for _ in range(rnd.choice((3, 4))):
            options = [ch for ch in CHANNEL_ID if CHANNEL_ID[ch] not in kinds_used[-1:] and ch not in channels]
            ch = rnd.choice(options)
            channels.append(ch)
            kinds_used.append(CHANNEL_ID[ch])
        at = start + rnd.uniform(0, 30 * 86400)
        contacts: list[Contact] = []
        seen: dict[str, str] = {}
        intent = rnd.choice(sorted(INTENTS))
        for k, ch in enumerate(channels):
            kind = CHANNEL_ID[ch]
            ids = {kind: own[kind]}
            link: dict[str, str] | None = None
            lookup = None
            if crm and ch == "voice" and p % 10 == 0:
                ids = {"phone": switchboard, "customer_id": own["customer_id"]}  # calls from the office switchboard
                lookup = ("customer_id", own["customer_id"])
            # a device links only while it is all we know (anonymous app use, then a login);
            # once the person is identified, the channels verify them by a strong identifier
            known = [(kk, v) for kk, v in seen.items() if kk != kind and (kk != "device_id" or set(seen) == {"device_id"})]
            if k > 0 and known:
                kk, v = rnd.choice(known)
                if rnd.random() < 0.5:
                    ids[kk] = v  # direct: the channel authenticated the customer
                else:
                    link = {kind: ids.get(kind, own[kind]), kk: v}  # late: verified during the contact
                    if lookup is not None:
                        link = {"customer_id": own["customer_id"], kk: v}
            if crm and k == 0:
                ids["customer_id"] = own["customer_id"]
            if k > 0 and rnd.random() < 0.3:
                intent = rnd.choice(sorted(INTENTS))  # a new topic; else the same issue again
            texts = INTENTS[intent]
            steps = []
            t = at
            for i in range(rnd.randint(1, 3)):
                t += rnd.uniform(20, 300)
                steps.append(Step(at=t, text=texts[min(i + (k > 0), len(texts) - 1)], inbound=True))
                t += rnd.uniform(10, 120)
                steps.append(Step(at=t, text="Thanks for waiting, let me check that for you.", inbound=False))
            steps.append(Step(at=t + 30, text=rnd.choice(THANKS), inbound=True))
            contacts.append(Contact(contact_id=f"{person}-c{k}", channel=ch, ids=ids, opened_at=at, steps=steps,
                                    intent=intent, link_ids=link, lookup=lookup))
            for kk, v in ids.items():
                if v != switchboard:
                    seen[kk] = v
            at = t + rnd.uniform(3600, 5 * 86400)
        journeys.append(Journey(person=person, source="generated", contacts=contacts, identifiers=own))
    # traps: landlines shared by two CRM customers, devices shared by two identified people.
    # Each meets the other's value when both are identified (the guards must refuse the link).
    def used_before(j: Journey, kind: str, before: int) -> bool:
        return any(c.ids.get(kind) == j.identifiers[kind] for c in j.contacts[:before])

    crm_people = [j for j in journeys if "customer_id" in j.identifiers]
    for a, b in zip(crm_people[1::7], crm_people[2::7], strict=False):
        last = b.contacts[-1]
        if CHANNEL_ID[last.channel] != "phone" and used_before(a, "phone", len(b.contacts) - 1):
            last.ids = {**last.ids, "phone": a.identifiers["phone"], "customer_id": b.identifiers["customer_id"]}
            last.lookup = ("customer_id", b.identifiers["customer_id"])
    for a, b in zip(journeys[3::11], journeys[4::11], strict=False):
        last = b.contacts[-1]
        if CHANNEL_ID[last.channel] != "device_id" and last.link_ids is None and used_before(a, "device_id", len(b.contacts) - 1):
            last.ids = {**last.ids, "device_id": a.identifiers["device_id"]}
    return journeys


JUNK = ({"phone": "0000000000"}, {"email": "noreply@shop.example.com"}, {"social_handle": "null"}, {"account_number": "-1"})


def junk_for(contact_id: str) -> dict[str, str] | None:
    """Placeholder identifiers some channel systems send (one contact in eight), deterministically."""
    h = sum(contact_id.encode())
    return dict(JUNK[h % len(JUNK)]) if h % 8 == 0 else None
