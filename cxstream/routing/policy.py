"""Eligibility and the advisor score: who may take a contact, and who should.

Eligible (every policy): logged in, presence ``available``, free capacity on the
contact's channel, serves the contact's language, has the skills still required at
the contact's escalation step, did not already decline it, and — while a sticky or
transfer hold runs — is the advisor the contact is held for (who then needs no skill).

Score (higher wins; ties broken by advisor id), each term in [0, 1] before weighting:

- ``fifo``: ``idle`` only (longest idle first).
- ``skills``: ``speed`` (learned handle time) + ``proficiency`` + a 0.01 ``idle`` tie-break.
- ``default``: ``weights.proficiency * proficiency + weights.speed * speed
  + weights.sticky * sticky + weights.idle * idle + weights.fairness * fairness``.
"""

from __future__ import annotations

from cxstream.routing.config import RoutingConfig
from cxstream.routing.queue import ContactState
from cxstream.routing.roster import AdvisorState, Learned, can_take_work, has_room, speaks


def required_now(c: ContactState, cfg: RoutingConfig) -> list[str]:
    """Skills still required at the contact's escalation step.

    Step 1 keeps only the primary (first) skill; step 2 and later require none.

    >>> c = ContactState(contact_id="c", customer_id="u", channel="chat", opened_at=0, queue="q", seq=0, required_skills=["a", "b"])
    >>> required_now(c, RoutingConfig()), (setattr(c, "step", 1), required_now(c, RoutingConfig()))[1]
    (['a', 'b'], ['a'])
    """
    if c.step <= 0:
        return c.required_skills
    if c.step == 1:
        return c.required_skills[:1]
    return []


def eligible(adv: AdvisorState, c: ContactState, now: float, cfg: RoutingConfig) -> bool:
    """May *adv* be offered *c* now?"""
    held = c.hold_for is not None and now < c.hold_until
    if held and adv.advisor_id != c.hold_for:
        return False
    if not can_take_work(adv) or not has_room(adv, c.channel, cfg):
        return False
    if adv.advisor_id in c.declined or not speaks(adv, c.language):
        return False
    if held:
        return True  # a hold names the advisor (sticky or direct transfer): skills do not apply
    return all(s in adv.skills for s in required_now(c, cfg))


def skill_key(c: ContactState) -> str:
    """The key handle times are learned under: intent, else primary skill, else channel.

    >>> skill_key(ContactState(contact_id="c", customer_id="u", channel="voice", opened_at=0, queue="q", seq=0, required_skills=["PS"]))
    'PS'
    """
    return c.intent or (c.required_skills[0] if c.required_skills else c.channel)


def proficiency(adv: AdvisorState, c: ContactState) -> float:
    """Configured proficiency (1-5 scaled to 0.2-1) for the contact's intent or skills; 0.5 if none apply.

    >>> a = AdvisorState(advisor_id="a", skills={"cards": 5, "loans": 2})
    >>> c = ContactState(contact_id="c", customer_id="u", channel="voice", opened_at=0, queue="q", seq=0, required_skills=["cards", "loans"])
    >>> proficiency(a, c)
    0.7
    """
    if c.intent and c.intent in adv.skills:
        return adv.skills[c.intent] / 5.0
    if not c.required_skills:
        return 0.5
    return sum(adv.skills.get(s, 0) for s in c.required_skills) / (5.0 * len(c.required_skills))


def speed(adv: AdvisorState, group: Learned | None, key: str, cfg: RoutingConfig) -> float:
    """Learned speed for *key*: group mean handle time / advisor's, halved and capped to [0, 1].

    0.5 means average; 1.0 means twice as fast as the group.  Neutral (0.5) until both
    the advisor and the group have ``learn_min_samples`` samples.

    >>> cfg = RoutingConfig()
    >>> speed(AdvisorState(advisor_id="a", learned={"PS": Learned(mean_s=100.0, n=9)}), Learned(mean_s=150.0, n=99), "PS", cfg)
    0.75
    """
    mine = adv.learned.get(key)
    if group is None or mine is None or mine.n < cfg.learn_min_samples or group.n < cfg.learn_min_samples:
        return 0.5
    if mine.mean_s <= 0:
        return 1.0
    return min(1.0, 0.5 * group.mean_s / mine.mean_s)


def score(
    adv: AdvisorState,
    c: ContactState,
    now: float,
    cfg: RoutingConfig,
    group: Learned | None,
    max_today: int,
) -> tuple[float, dict[str, float]]:
    """The advisor's score for the contact and its breakdown (the Assignment's ``reasons``)."""
    idle_s = max(0.0, now - adv.idle_since)
    if cfg.policy == "fifo":
        return idle_s, {"idle_s": round(idle_s, 3)}
    key = skill_key(c)
    spd = speed(adv, group, key, cfg)
    prof = proficiency(adv, c)
    idle = min(1.0, idle_s / cfg.idle_norm_s) if cfg.idle_norm_s > 0 else 0.0
    if cfg.policy == "skills":
        total = spd + prof + 0.01 * idle
        return total, {"speed": round(spd, 4), "proficiency": round(prof, 4), "idle": round(0.01 * idle, 6)}
    w = cfg.weights
    sticky = 1.0 if c.last_advisor_id is not None and c.last_advisor_id == adv.advisor_id else 0.0
    fair = 1.0 - adv.handled_today / max_today if max_today > 0 else 1.0
    parts = {
        "proficiency": w.proficiency * prof,
        "speed": w.speed * spd,
        "sticky": w.sticky * sticky,
        "idle": w.idle * idle,
        "fairness": w.fairness * fair,
    }
    total = sum(parts.values())
    return total, {k: round(v, 6) for k, v in parts.items()}


def best_advisor(
    candidates: list[AdvisorState],
    c: ContactState,
    now: float,
    cfg: RoutingConfig,
    group: Learned | None,
    max_today: int,
) -> AdvisorState | None:
    """The highest :func:`score` among *candidates* (all eligible for *c*), ties to the lowest advisor id.

    The same float arithmetic as :func:`score` (its total), with what depends only on the contact
    worked out once.  The result does not depend on the order of *candidates*.

    >>> a, b = AdvisorState(advisor_id="a", idle_since=5.0), AdvisorState(advisor_id="b", idle_since=0.0)
    >>> c = ContactState(contact_id="c", customer_id="u", channel="voice", opened_at=0, queue="q", seq=0)
    >>> best_advisor([a, b], c, 10.0, RoutingConfig(), None, 0).advisor_id
    'b'
    """
    best: AdvisorState | None = None
    best_score = 0.0
    policy = cfg.policy
    if policy == "fifo":
        for a in candidates:
            x = now - a.idle_since
            sc = x if x > 0.0 else 0.0  # max(0.0, x)
            if best is None or sc > best_score or (sc == best_score and a.advisor_id < best.advisor_id):
                best, best_score = a, sc
        return best
    key = skill_key(c)
    trusted = group is not None and group.n >= cfg.learn_min_samples
    half_group = 0.5 * group.mean_s if group is not None else 0.0
    min_samples = cfg.learn_min_samples
    intent, required = c.intent, c.required_skills
    denom = 5.0 * len(required)
    norm = cfg.idle_norm_s
    default = policy != "skills"
    w = cfg.weights
    wp, ws, wst, wi, wf = w.proficiency, w.speed, w.sticky, w.idle, w.fairness
    last = c.last_advisor_id
    for a in candidates:
        x = now - a.idle_since
        idle_s = x if x > 0.0 else 0.0
        mine = a.learned.get(key)  # speed()
        if not trusted or mine is None or mine.n < min_samples:
            spd = 0.5
        elif mine.mean_s <= 0:
            spd = 1.0
        else:
            y = half_group / mine.mean_s
            spd = y if y < 1.0 else 1.0  # min(1.0, y)
        skills = a.skills  # proficiency()
        if intent and intent in skills:
            prof = skills[intent] / 5.0
        elif not required:
            prof = 0.5
        else:
            prof = sum(skills.get(s, 0) for s in required) / denom
        if norm > 0:
            z = idle_s / norm
            idle = z if z < 1.0 else 1.0
        else:
            idle = 0.0
        if default:
            sticky = 1.0 if last is not None and last == a.advisor_id else 0.0
            fair = 1.0 - a.handled_today / max_today if max_today > 0 else 1.0
            sc = sum((wp * prof, ws * spd, wst * sticky, wi * idle, wf * fair))
        else:
            sc = spd + prof + 0.01 * idle
        if best is None or sc > best_score or (sc == best_score and a.advisor_id < best.advisor_id):
            best, best_score = a, sc
    return best
