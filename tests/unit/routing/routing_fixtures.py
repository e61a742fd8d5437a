"""Small builders of router inputs for the routing unit tests, and a seeded random stream."""

from __future__ import annotations

import random

import msgspec

from cxstream.schemas.events import AdvisorEvent
from cxstream.schemas.routing import ContactRequest, ContactUpdate, RouterInput, RouterTick

_n = 0


def _eid(prefix: str) -> str:
    global _n
    _n += 1
    return f"{prefix}-{_n}"


def login(
    adv: str,
    t: float,
    *,
    skills: dict[str, int] | None = None,
    languages: list[str] | None = None,
    capacity: dict[str, int] | None = None,
    group: str = "default",
) -> AdvisorEvent:
    return AdvisorEvent(
        event_id=_eid("login"),
        occurred_at=t,
        advisor_id=adv,
        kind="login",
        presence="available",
        skills=skills,
        languages=languages,
        capacity=capacity,
        routing_group=group,
    )  # type: ignore[arg-type]


def adv_event(
    adv: str,
    kind: str,
    t: float,
    *,
    contact: str | None = None,
    assignment: str | None = None,
    presence: str | None = None,
) -> AdvisorEvent:
    return AdvisorEvent(
        event_id=_eid(kind),
        occurred_at=t,
        advisor_id=adv,
        kind=kind,
        contact_id=contact,  # type: ignore[arg-type]
        assignment_id=assignment,
        presence=presence,
    )  # type: ignore[arg-type]


def request(
    cid: str,
    t: float,
    *,
    channel: str = "voice",
    skills: list[str] | None = None,
    language: str | None = None,
    priority: int = 0,
    tier: str | None = None,
    churn: float | None = None,
    last: str | None = None,
    intent: str | None = None,
) -> ContactRequest:
    return ContactRequest(
        event_id=_eid("req"),
        contact_id=cid,
        customer_id=f"cust-{cid}",
        routing_group="default",
        channel=channel,
        opened_at=t,
        language=language,
        priority=priority,  # type: ignore[arg-type]
        required_skills=skills or [],
        tier=tier,
        churn_risk=churn,
        last_advisor_id=last,
        intent=intent,
    )


def update(cid: str, kind: str, t: float, **kw: object) -> ContactUpdate:
    return ContactUpdate(event_id=_eid(kind), contact_id=cid, routing_group="default", kind=kind, at=t, **kw)  # type: ignore[arg-type]


def tick(t: float) -> RouterTick:
    return RouterTick(routing_group="default", at=t)


def random_stream(seed: int, n: int = 400) -> list[RouterInput]:
    """A seeded random mix of every input kind, including duplicates and late events."""
    rng = random.Random(seed)
    advisors = [f"a{i}" for i in range(5)]
    skills = ["cards", "loans", "fraud"]
    out: list[RouterInput] = []
    t = 1_000.0
    open_contacts: list[str] = []
    for i in range(n):
        t += rng.expovariate(1 / 4.0)
        r = rng.random()
        if r < 0.08:
            a = rng.choice(advisors)
            out.append(
                login(
                    a,
                    t,
                    skills={s: rng.randint(1, 5) for s in rng.sample(skills, rng.randint(1, 3))},
                    languages=rng.choice([["en"], ["en", "fr"], ["fr"]]),
                )
            )
        elif r < 0.35:
            cid = f"c{i}"
            open_contacts.append(cid)
            out.append(
                request(
                    cid,
                    t,
                    channel=rng.choice(["voice", "chat", "email"]),
                    skills=rng.sample(skills, rng.randint(0, 2)),
                    language=rng.choice([None, "en", "fr"]),
                    priority=rng.randint(0, 3),
                    tier=rng.choice([None, "vip"]),
                    churn=rng.choice([None, rng.random()]),
                    last=rng.choice([None, *advisors]),
                )
            )
        elif r < 0.6 and open_contacts:
            cid = rng.choice(open_contacts)
            kind = rng.choice(
                ["offer_accepted", "offer_accepted", "offer_rejected", "contact_completed", "contact_completed"]
            )
            out.append(adv_event(rng.choice(advisors), kind, t, contact=cid))
        elif r < 0.7 and open_contacts:
            cid = rng.choice(open_contacts)
            out.append(update(cid, rng.choice(["abandoned", "closed", "transferred"]), t))
        elif r < 0.78:
            out.append(
                adv_event(
                    rng.choice(advisors),
                    "presence",
                    t,
                    presence=rng.choice(["available", "available", "away", "busy", "offline"]),
                )
            )
        elif r < 0.8:
            out.append(adv_event(rng.choice(advisors), "logout", t))
        elif r < 0.85 and out:
            out.append(rng.choice(out))  # at-least-once redelivery of an earlier input
        elif r < 0.87:
            out.append(request(f"late{i}", t - rng.uniform(0, 60)))  # a late event
        else:
            out.append(tick(t))
    return out


def encode_all(outputs: list[object]) -> list[bytes]:
    return [msgspec.json.encode(o) for o in outputs]


def closed_loop_stream(seed: int, n: int = 600, config: object | None = None) -> list[RouterInput]:
    """Inputs recorded from a seeded driver that reacts to the router's offers like desktops would:
    accept (then complete later), reject, or ignore (offer timeout); plus the random noise above."""
    from cxstream.routing import Router, RoutingConfig
    from cxstream.schemas.outputs import Assignment

    rng = random.Random(seed)
    cfg = config if isinstance(config, RoutingConfig) else RoutingConfig()
    router = Router(config=cfg)
    noise = random_stream(seed + 1, n)
    pending: list[tuple[float, RouterInput]] = []
    log: list[RouterInput] = []

    def feed(msg: RouterInput) -> None:
        log.append(msg)
        for o in router.apply(msg):
            if isinstance(o, Assignment):
                t0 = o.decided_at
                u = rng.random()
                if u < 0.75:
                    acc = t0 + rng.uniform(0, 5)
                    pending.append(
                        (
                            acc,
                            adv_event(
                                o.advisor_id, "offer_accepted", acc, contact=o.contact_id, assignment=o.assignment_id
                            ),
                        )
                    )
                    done = acc + rng.expovariate(1 / 60.0)
                    pending.append((done, adv_event(o.advisor_id, "contact_completed", done, contact=o.contact_id)))
                elif u < 0.9:
                    rej = t0 + rng.uniform(0, 5)
                    pending.append(
                        (
                            rej,
                            adv_event(
                                o.advisor_id, "offer_rejected", rej, contact=o.contact_id, assignment=o.assignment_id
                            ),
                        )
                    )
                    pending.append((rej + 1, adv_event(o.advisor_id, "presence", rej + 1, presence="available")))
                else:
                    back = t0 + cfg.offer_timeout_s + 10
                    pending.append((back, adv_event(o.advisor_id, "presence", back, presence="available")))

    for msg in noise:
        t = (
            msg.opened_at
            if isinstance(msg, ContactRequest)
            else msg.at
            if isinstance(msg, (ContactUpdate, RouterTick))
            else msg.occurred_at
        )
        pending.sort(key=lambda p: p[0])
        while pending and pending[0][0] <= t:
            feed(pending.pop(0)[1])
        feed(msg)
    for _, msg in sorted(pending, key=lambda p: p[0]):
        feed(msg)
    return log
