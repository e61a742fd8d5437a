"""Eligibility and the advisor score: who may take a contact, and who should.

Eligible (every policy): logged in, presence ``available``, free capacity on the
contact's channel, serves the contact's language, has the skills still required at
the contact's escalation step, did not already decline it, and — while a sticky or
transfer hold runs — is the advisor the contact is held for (who then needs no skill).

Score (higher wins; ties broken by advisor id), each term in [0, 1] before weighting:

- ``fifo``: ``idle`` only (longest idle first).
- ``skills``: ``speed`` (learned handle time) + ``proficiency`` + a 0.01 ``idle`` tie-break.
- ``default`` (predictive): minus the advisor's *expected handle time* for the contact
  (:func:`expected_handle`: learned online per advisor and key, shrunk toward the advisor's
  prior), plus an idle-time credit and a credit for the customer's last advisor, in seconds.
  The queue is in view: :func:`hold_target` says when a contact should rather wait, within its
  SLA, for a faster advisor about to free up.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from cxstream.routing.config import RoutingConfig
from cxstream.routing.queue import ContactState
from cxstream.routing.roster import AdvisorState, Learned, can_take_work, has_room, speaks
from cxstream.schemas.outputs import QueuedReason


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


def required_language(c: ContactState, cfg: RoutingConfig) -> str | None:
    """The language an advisor must serve to take *c* now (None: any), see ``RoutingConfig.language_skills``.

    >>> c = ContactState(contact_id="c", customer_id="u", channel="chat", opened_at=0, queue="q", seq=0, language="fr")
    >>> required_language(c, RoutingConfig()), required_language(c, RoutingConfig(language_skills=False))
    ('fr', None)
    """
    if not cfg.language_skills or c.language_relaxed:
        return None
    return c.language


def language_reasons(adv: AdvisorState, c: ContactState) -> dict[str, float]:
    """What the assignment's ``reasons`` say about language: ``language_match`` 1 when the advisor lists the
    contact's language, ``language_fallback`` 1 when it went, after the fallback, to one who does not.

    >>> c = ContactState(contact_id="c", customer_id="u", channel="chat", opened_at=0, queue="q", seq=0, language="fr")
    >>> language_reasons(AdvisorState(advisor_id="a", languages=["fr"]), c)
    {'language_match': 1.0}
    >>> c.language_relaxed = True; language_reasons(AdvisorState(advisor_id="b", languages=["en"]), c)
    {'language_match': 0.0, 'language_fallback': 1.0}
    """
    if not c.language:
        return {}
    match = bool(adv.languages) and speaks(adv, c.language)
    out = {"language_match": 1.0 if match else 0.0}
    if c.language_relaxed and not speaks(adv, c.language):
        out["language_fallback"] = 1.0
    return out


def eligible(adv: AdvisorState, c: ContactState, now: float, cfg: RoutingConfig) -> bool:
    """May *adv* be offered *c* now?"""
    held = c.hold_for is not None and now < c.hold_until
    if held and adv.advisor_id != c.hold_for:
        return False
    if not can_take_work(adv) or not has_room(adv, c.channel, cfg):
        return False
    if adv.advisor_id in c.declined or not speaks(adv, required_language(c, cfg)):
        return False
    if held:
        return True  # a hold names the advisor (sticky or direct transfer): skills do not apply
    return all(s in adv.skills for s in required_now(c, cfg))


def could_serve(adv: AdvisorState, c: ContactState, cfg: RoutingConfig) -> bool:
    """*adv* is logged in, has the skills and the language *c* needs now and has not declined it (presence and room aside)."""
    return (
        adv.logged_in and adv.advisor_id not in c.declined and speaks(adv, required_language(c, cfg))
        and all(s in adv.skills for s in required_now(c, cfg))
    )


def why_queued(
    c: ContactState, now: float, cfg: RoutingConfig, *, anyone_logged_in: bool, anyone_could: bool
) -> QueuedReason:
    """Why a new contact waits instead of being offered at once: the ``reason`` of its ``queued`` routing event.

    * ``held_for_last_advisor``: the default policy holds it for the customer's last advisor
      (``sticky_wait_s``), who cannot take it now;
    * ``held_for_faster_advisor``: the default policy holds it for an advisor about to free up who
      is expected to handle it faster than the free ones (:func:`hold_target`);
    * ``no_advisor_logged_in``;
    * ``no_advisor_with_skills``: no advisor logged in has the skills and the language it needs
      now (:func:`could_serve`; or every one who has declined it);
    * ``advisors_busy``: some have, and none can take it now (at capacity on its channel, away,
      or offered a contact ahead of it in the queue).

    >>> cfg = RoutingConfig()
    >>> c = ContactState(contact_id="c", customer_id="u", channel="chat", opened_at=0, queue="q", seq=0)
    >>> why_queued(c, 1.0, cfg, anyone_logged_in=True, anyone_could=False)
    'no_advisor_with_skills'
    >>> c.hold_for, c.hold_until = "ann", 20.0
    >>> why_queued(c, 1.0, cfg, anyone_logged_in=True, anyone_could=True)
    'held_for_faster_advisor'
    """
    if c.hold_for is not None and now < c.hold_until:
        sticky = c.hold_for == c.last_advisor_id and c.hold_until == c.opened_at + cfg.sticky_wait_s.get(c.channel, 0.0)
        return "held_for_last_advisor" if sticky else "held_for_faster_advisor"
    if not anyone_logged_in:
        return "no_advisor_logged_in"
    return "advisors_busy" if anyone_could else "no_advisor_with_skills"


def skill_key(c: ContactState) -> str:
    """The key handle times are learned under: intent, else primary skill, else channel.

    >>> skill_key(ContactState(contact_id="c", customer_id="u", channel="voice", opened_at=0, queue="q", seq=0, required_skills=["PS"]))
    'PS'
    """
    return c.intent or (c.required_skills[0] if c.required_skills else c.channel)


def learn_key(c: ContactState) -> str:
    """The key handle times are learned under: channel and :func:`skill_key` (the channel alone if that is all).

    >>> learn_key(ContactState(contact_id="c", customer_id="u", channel="voice", opened_at=0, queue="q", seq=0, required_skills=["PS"]))
    'voice:PS'
    >>> learn_key(ContactState(contact_id="c", customer_id="u", channel="chat", opened_at=0, queue="q", seq=0))
    'chat'
    """
    key = skill_key(c)
    return key if key == c.channel else f"{c.channel}:{key}"


def resolution_key(key: str) -> str:
    """Where the resolution rate of a learn key is kept (beside its handle time, in the same tables).

    >>> resolution_key("voice:PS")
    'voice:PS|resolved'
    """
    return key + "|resolved"


def learn_completion(
    learned: dict[str, Learned],
    adv: AdvisorState | None,
    key: str,
    handle_s: float,
    cfg: RoutingConfig,
    resolved: bool | None = None,
) -> None:
    """Learn one completed contact's handle time: the group's mean for *key*, the advisor's own
    mean for it, and the advisor's pace (handle time / the group's mean before this sample); and,
    when the advisor's disposition says whether it was *resolved*, the resolution rate of the group
    and of the advisor for *key* (under :func:`resolution_key`).

    >>> cfg = RoutingConfig()
    >>> learned, a = {}, AdvisorState(advisor_id="a")
    >>> learn_completion(learned, a, "voice:PS", 100.0, cfg); learn_completion(learned, a, "voice:PS", 50.0, cfg)
    >>> (learned["voice:PS"].n, a.learned["voice:PS"].mean_s, a.pace.mean_s)
    (2, 75.0, 0.5)
    """
    group = learned.get(key)
    if group is None:
        group = learned[key] = Learned()
    if adv is not None:
        if group.n > 0 and group.mean_s > 0:
            adv.pace.update(handle_s / group.mean_s, cfg.learn_alpha)
        mine = adv.learned.get(key)
        if mine is None:
            mine = adv.learned[key] = Learned()
        mine.update(handle_s, cfg.learn_alpha)
    group.update(handle_s, cfg.learn_group_alpha)
    if resolved is not None:
        rkey = resolution_key(key)
        for table, alpha in ((learned, cfg.learn_group_alpha), (adv.learned if adv is not None else None, cfg.learn_alpha)):
            if table is not None:
                rate = table.get(rkey)
                if rate is None:
                    rate = table[rkey] = Learned()
                rate.update(1.0 if resolved else 0.0, alpha)


def resolution(adv: AdvisorState, key: str, group: Learned | None, cfg: RoutingConfig) -> float:
    """The advisor's expected first-contact resolution rate for *key*, shrunk toward the group's
    (``shrink_samples`` pseudo-samples); 1.0 while no disposition said (then it changes nothing).

    >>> cfg = RoutingConfig(shrink_samples=10.0)
    >>> a = AdvisorState(advisor_id="a", learned={"voice:PS|resolved": Learned(mean_s=0.5, n=10)})
    >>> resolution(a, "voice:PS", Learned(mean_s=0.9, n=100), cfg), resolution(a, "voice:PS", None, cfg)
    (0.7, 1.0)
    """
    if group is None or group.n <= 0:
        return 1.0
    mine = adv.learned.get(resolution_key(key))
    if mine is None or mine.n <= 0:
        return group.mean_s
    m = cfg.shrink_samples
    return (mine.n * mine.mean_s + m * group.mean_s) / (mine.n + m)


def pace(adv: AdvisorState, cfg: RoutingConfig) -> float:
    """The advisor's overall handle time relative to the group's (1 = average), shrunk toward 1.

    Learned over every key (``AdvisorState.pace``: handle time / the key's group mean), weighted
    against ``pace_shrink_samples`` pseudo-samples of 1: a new advisor is assumed average.

    >>> cfg = RoutingConfig(pace_shrink_samples=20.0)
    >>> pace(AdvisorState(advisor_id="new"), cfg)
    1.0
    >>> pace(AdvisorState(advisor_id="a", pace=Learned(mean_s=0.6, n=20)), cfg)
    0.8
    """
    p, m = adv.pace, cfg.pace_shrink_samples
    if p.n <= 0:
        return 1.0
    return (p.n * p.mean_s + m) / (p.n + m)


def expected_handle(adv: AdvisorState, key: str, group: Learned | None, cfg: RoutingConfig) -> float | None:
    """The advisor's expected handle time for *key* (seconds); None while the group has no sample of it.

    Empirical-Bayes style shrinkage: the advisor's own learned mean for the key, weighted by its
    sample count, against ``shrink_samples`` pseudo-samples of the prior = the key's group mean x
    the advisor's overall :func:`pace`.  A new advisor starts at the prior (the type's mean, or
    their pace on other types); the more they handle, the more their own times count, and since
    the means keep adapting (:class:`Learned`), an advisor who improves is seen to.

    >>> cfg = RoutingConfig(shrink_samples=10.0)
    >>> group = Learned(mean_s=200.0, n=500)
    >>> expected_handle(AdvisorState(advisor_id="new"), "voice:PS", group, cfg)
    200.0
    >>> fast = AdvisorState(advisor_id="f", learned={"voice:PS": Learned(mean_s=100.0, n=30)})
    >>> expected_handle(fast, "voice:PS", group, cfg)
    125.0
    >>> expected_handle(fast, "voice:PS", None, cfg) is None
    True
    """
    if group is None or group.n <= 0:
        return None
    prior = group.mean_s * pace(adv, cfg)
    mine = adv.learned.get(key)
    if mine is None or mine.n <= 0:
        return prior
    m = cfg.shrink_samples
    return (mine.n * mine.mean_s + m * prior) / (mine.n + m)


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
    resolved: Learned | None = None,
) -> tuple[float, dict[str, float]]:
    """The advisor's score for the contact and its breakdown (the Assignment's ``reasons``, with
    :func:`language_reasons` for a contact whose language is known).

    *group*: the group's handle time for the contact's :func:`learn_key`; *resolved*: the group's
    resolution rate for it (``default`` only; None: no disposition said)."""
    total, why = _score(adv, c, now, cfg, group, max_today, resolved)
    if c.language:
        why.update(language_reasons(adv, c))
    return total, why


def _score(
    adv: AdvisorState,
    c: ContactState,
    now: float,
    cfg: RoutingConfig,
    group: Learned | None,
    max_today: int,
    resolved: Learned | None = None,
) -> tuple[float, dict[str, float]]:
    idle_s = max(0.0, now - adv.idle_since)
    if cfg.policy == "fifo":
        return idle_s, {"idle_s": round(idle_s, 3)}
    key = learn_key(c)
    spd = speed(adv, group, key, cfg)
    prof = proficiency(adv, c)
    idle = min(1.0, idle_s / cfg.idle_norm_s) if cfg.idle_norm_s > 0 else 0.0
    if cfg.policy == "skills":
        total = spd + prof + 0.01 * idle
        return total, {"speed": round(spd, 4), "proficiency": round(prof, 4), "idle": round(0.01 * idle, 6)}
    return _predictive(adv, c, idle_s, cfg, group, resolved)


def _predictive(
    adv: AdvisorState, c: ContactState, idle_s: float, cfg: RoutingConfig, group: Learned | None,
    resolved: Learned | None = None,
) -> tuple[float, dict[str, float]]:
    """The ``default`` score: -(expected handle time per resolution - idle credit - sticky credit), in seconds.

    Expected handle time per resolution = expected handle time / expected resolution rate: an advisor
    whose contacts come back unresolved costs the next contact's handle time too."""
    key = learn_key(c)
    expect = expected_handle(adv, key, group, cfg)
    p = resolution(adv, key, resolved, cfg)
    if expect is not None and p < 1.0:
        expect = expect / max(p, 0.05)
    mine = adv.learned.get(key)
    idle = idle_s * cfg.idle_credit_per_s
    idle = idle if idle < cfg.idle_credit_max_s else cfg.idle_credit_max_s
    sticky = cfg.sticky_credit_s if c.last_advisor_id is not None and c.last_advisor_id == adv.advisor_id else 0.0
    total = -((expect if expect is not None else 0.0) - idle - sticky)
    why = {
        "expected_handle_s": round(expect, 3) if expect is not None else -1.0,
        "type_mean_s": round(group.mean_s, 3) if group is not None and group.n > 0 else -1.0,
        "samples": float(mine.n if mine is not None else 0),
        "pace": round(pace(adv, cfg), 4),
        "resolution": round(p, 4),
        "idle_credit_s": round(idle, 3),
        "sticky": sticky,
    }
    return total, why


def best_advisor(
    candidates: list[AdvisorState],
    c: ContactState,
    now: float,
    cfg: RoutingConfig,
    group: Learned | None,
    max_today: int,
    resolved: Learned | None = None,
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
    if policy == "default":  # _predictive's total, without building its reasons
        key = learn_key(c)
        per_s, cap = cfg.idle_credit_per_s, cfg.idle_credit_max_s
        last, sticky_s = c.last_advisor_id, cfg.sticky_credit_s
        for a in candidates:
            x = now - a.idle_since
            idle = (x if x > 0.0 else 0.0) * per_s
            idle = idle if idle < cap else cap
            expect = expected_handle(a, key, group, cfg)
            if resolved is not None:
                p = resolution(a, key, resolved, cfg)
                if expect is not None and p < 1.0:
                    expect = expect / max(p, 0.05)
            sticky = sticky_s if last is not None and last == a.advisor_id else 0.0
            sc = -((expect if expect is not None else 0.0) - idle - sticky)
            if best is None or sc > best_score or (sc == best_score and a.advisor_id < best.advisor_id):
                best, best_score = a, sc
        return best
    key = learn_key(c)
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


def hold_target(
    c: ContactState,
    best: AdvisorState,
    now: float,
    cfg: RoutingConfig,
    advisors: Iterable[AdvisorState],
    contacts: Mapping[str, ContactState],
    learned: Mapping[str, Learned],
    reserved: Collection[str],
) -> tuple[str, float, float] | None:
    """Should *c* wait for a faster advisor about to free up instead of going to *best* now?

    Returns ``(advisor id, hold until, expected saving in seconds)`` or None.  Only the
    ``default`` policy, only on exclusive channels (voice: an advisor's free time is predictable
    from the one contact held), once per contact (never after a sticky/transfer hold or an offer).
    An advisor *b* qualifies if, once free, it could take *c* (skills, language, not declined),
    it holds exactly one active contact, not past that contact's expected handle time, it is not
    already awaited by another held contact (*reserved*), and with ``remaining`` = b's expected
    rest of its current contact:

    - *c* would still be answered within ``hold_sla_fraction`` x SLA of its arrival
      (``now + remaining``), so waiting never goes past the contact's SLA;
    - expected handle time of *best* - of *b* - remaining >= ``hold_min_saving_s``: the advisor
      time saved exceeds the wait added (the contact is also done sooner).

    Among those, the largest saving wins (ties: lowest id).  The contact stays waiting, held for
    *b* until the bound (``hold until``); if *b* does not free up by then, anyone may take it.
    *best* stays free for the next waiting contact, so no advisor is idled while others wait.
    """
    if cfg.policy != "default" or cfg.hold_sla_fraction <= 0 or c.hold_until > 0 or c.attempts > 0:
        return None
    if c.channel not in cfg.exclusive_channels:
        return None
    bound = c.opened_at + cfg.hold_sla_fraction * cfg.sla_for(c.channel)
    if now >= bound:
        return None
    key = learn_key(c)
    group = learned.get(key)
    e_best = expected_handle(best, key, group, cfg)
    if e_best is None:
        return None
    need = required_now(c, cfg)
    choice: tuple[str, float, float] | None = None
    for b in advisors:
        aid = b.advisor_id
        if aid == best.advisor_id or aid in reserved or aid in c.declined:
            continue
        if not b.logged_in or b.presence != "available" or len(b.held) != 1:
            continue
        cur = contacts.get(b.held[0])
        if cur is None or cur.status != "active" or cur.accepted_at is None or cur.channel != c.channel:
            continue
        if not speaks(b, c.language) or not all(s in b.skills for s in need):
            continue
        cur_key = learn_key(cur)
        e_cur = expected_handle(b, cur_key, learned.get(cur_key), cfg)
        e_b = expected_handle(b, key, group, cfg)
        if e_cur is None or e_b is None:
            continue
        remaining = e_cur - (now - cur.accepted_at)
        if remaining <= 0.0 or now + remaining > bound:
            continue  # overdue (unpredictable) or not soon enough
        saving = e_best - e_b - remaining
        if saving < cfg.hold_min_saving_s:
            continue
        if choice is None or saving > choice[2] or (saving == choice[2] and aid < choice[0]):
            choice = (aid, bound, saving)
    return choice
