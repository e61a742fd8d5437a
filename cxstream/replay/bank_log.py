"""Reader and simulation adapter for the real "Anonymous Bank" call-centre log (Technion, 1999).

The log (``callcenter_anonymous_bank/january_1999.txt`` under the shared data folder,
see its PROVENANCE.md) has one row per call: IVR entry/exit, queue entry/exit and wait,
outcome (AGENT = served, HANG = abandoned, PHANTOM), service start/end/duration, the
advisor (``server``), the call type and the customer priority.

This module turns it into what :mod:`cxstream.routing.simulate` needs, with these
modelling assumptions (also in ``docs/ROUTING.md``):

- **Calls routed**: every non-phantom call that reached the advisor queue: it queued
  (``q_start`` set) or was served.  Calls that hung up in the IVR never reach a router.
  Arrival = ``q_start`` if it queued, else the IVR exit (``vru_exit``).
- **Patience**: abandoned calls have an observed patience (their queue wait); served calls
  are right-censored at their wait.  A served call's patience is drawn from the
  Kaplan-Meier estimate of its call type's patience, conditional on exceeding its observed
  wait; beyond the last observed abandonment it is infinite.
- **Shifts**: an advisor is on shift from the start of their first service of a day to the
  end of their last one, split where they served nothing for more than ``gap_s`` (breaks).
- **Skills**: an advisor has a call type as a skill if they served at least ``min_type_calls``
  calls of it in the log.
- **Service time** of a call given to advisor *a*: resampled from *a*'s own real service
  times for that call type when *a* has at least ``min_own_samples`` of them; otherwise the
  type's pooled times scaled by *a*'s speed factor (their mean time relative to the type means).
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import math
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import msgspec

from cxstream.datasets import shared_data_dir
from cxstream.routing.simulate import SimCall, SimShift

LOG_RELATIVE = "callcenter_anonymous_bank/january_1999.txt"


def data_dir() -> Path:
    """The shared data folder (:func:`cxstream.datasets.shared_data_dir`)."""
    return shared_data_dir()


def default_log_path() -> Path:
    return data_dir() / LOG_RELATIVE


class BankCall(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the log that reached the advisor queue, with times as epoch seconds (UTC, as if)."""

    key: str  #: date/vru-line/call id: the log's own unique key
    customer_id: str
    priority: int  #: 0/1 regular, 2 priority customer
    call_type: str
    day: str  #: YYMMDD
    arrival: float
    outcome: str  #: AGENT or HANG
    wait_s: float  #: queue wait: to service (AGENT) or to hanging up (HANG)
    service_start: float | None = None
    service_s: float | None = None
    server: str | None = None


def _hms(text: str) -> int:
    """Seconds since midnight of 'H:MM:SS'.

    >>> _hms("7:41:25")
    27685
    """
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + int(s)


def _day_epoch(yymmdd: str) -> float:
    d = dt.date(
        1900 + int(yymmdd[:2]) if int(yymmdd[:2]) > 50 else 2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6])
    )
    return float(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())


def parse_rows(rows: Iterable[dict[str, str]]) -> list[BankCall]:
    """The calls that reached the advisor queue, in arrival order (ties by key).

    >>> row = {"vru+line": "AA0101", "call_id": "1", "customer_id": "7", "priority": "2", "type": "PS",
    ...        "date": "990101", "vru_exit": "6:55:26", "q_start": "6:55:26", "q_time": "17", "outcome": "AGENT",
    ...        "ser_start": "6:55:43", "ser_time": "54", "server": "MICHAL"}
    >>> c = parse_rows([row])[0]; (c.call_type, c.wait_s, c.service_s, c.server, c.arrival % 86400)
    ('PS', 17.0, 54.0, 'MICHAL', 24926.0)
    """
    calls: list[BankCall] = []
    for r in rows:
        outcome = r["outcome"]
        if outcome not in ("AGENT", "HANG"):
            continue
        queued = r["q_start"] != "0:00:00"
        if not queued and outcome != "AGENT":
            continue  # hung up in the IVR: never reached an advisor queue
        base = _day_epoch(r["date"])
        arrival = base + (_hms(r["q_start"]) if queued else _hms(r["vru_exit"]))
        server = r["server"] if outcome == "AGENT" and r["server"] != "NO_SERVER" else None
        start = svc = None
        if outcome == "AGENT":
            start = base + _hms(r["ser_start"])
            if start < arrival - 3600:  # crossed midnight
                start += 86400
            svc = float(r["ser_time"])
        wait = float(r["q_time"]) if queued else 0.0
        calls.append(
            BankCall(
                key=f"{r['date']}-{r['vru+line']}-{r['call_id']}",
                customer_id=r["customer_id"],
                priority=int(r["priority"]),
                call_type=r["type"],
                day=r["date"],
                arrival=arrival,
                outcome=outcome,
                wait_s=wait,
                service_start=start,
                service_s=svc,
                server=server,
            )
        )
    calls.sort(key=lambda c: (c.arrival, c.key))
    return calls


def read_calls(path: str | Path | None = None, days: set[str] | None = None) -> list[BankCall]:
    """Read the log (tab-separated, header row); optionally only some days (YYMMDD)."""
    with open(path or default_log_path(), newline="") as f:
        rows = csv.DictReader(f, delimiter="\t")
        calls = parse_rows(rows)
    return [c for c in calls if days is None or c.day in days]


def shifts(calls: list[BankCall], gap_s: float = 3600.0, min_type_calls: int = 5) -> list[SimShift]:
    """Advisor shifts (first to last service of a day, split at gaps > *gap_s*) with skills from the log."""
    served = [c for c in calls if c.server and c.service_start is not None and c.service_s is not None]
    type_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    spans: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for c in served:
        assert c.server is not None and c.service_start is not None and c.service_s is not None
        type_counts[c.server][c.call_type] += 1
        spans[(c.server, c.day)].append((c.service_start, c.service_start + c.service_s))
    out: list[SimShift] = []
    for (server, _day), iv in sorted(spans.items()):
        iv.sort()
        skills = {t: 3 for t, n in sorted(type_counts[server].items()) if n >= min_type_calls}
        start, end = iv[0]
        for s, e in iv[1:]:
            if s - end > gap_s:
                out.append(SimShift(advisor_id=server, start=start, end=end, skills=skills))
                start = s
            end = max(end, e)
        out.append(SimShift(advisor_id=server, start=start, end=end, skills=skills))
    out.sort(key=lambda s: (s.start, s.advisor_id))
    return out


class KaplanMeier:
    """Kaplan-Meier survival of patience from (duration, abandoned?) pairs, for conditional draws.

    >>> km = KaplanMeier([(10, True), (20, False), (30, True)])
    >>> [round(p, 3) for p in km.surv]
    [0.667, 0.0]
    >>> km.draw_beyond(0.0, random.Random(1)) in (10.0, 30.0, math.inf)
    True
    """

    def __init__(self, obs: Iterable[tuple[float, bool]]) -> None:
        data = sorted(obs)
        n_at_risk = len(data)
        times: list[float] = []
        surv: list[float] = []
        s = 1.0
        i = 0
        while i < len(data):
            t = data[i][0]
            deaths = total = 0
            while i < len(data) and data[i][0] == t:
                deaths += data[i][1]
                total += 1
                i += 1
            if deaths:
                s *= 1.0 - deaths / n_at_risk
                times.append(float(t))
                surv.append(s)
            n_at_risk -= total
        self.times = times
        self.surv = surv

    def survival(self, t: float) -> float:
        """S(t): probability that patience exceeds *t*."""
        k = bisect.bisect_right(self.times, t)
        return 1.0 if k == 0 else self.surv[k - 1]

    def draw_beyond(self, w: float, rng: random.Random) -> float:
        """A patience drawn from the estimate conditional on exceeding *w* (``inf`` past the last event)."""
        s_w = self.survival(w)
        if s_w <= 0.0:
            return w
        u = rng.random() * s_w  # find the first event time where S drops to <= u
        lo = bisect.bisect_right(self.times, w)
        for k in range(lo, len(self.times)):
            if self.surv[k] <= u:
                return self.times[k]
        return math.inf


def sim_calls(calls: list[BankCall], seed: int = 0) -> list[SimCall]:
    """The calls with patience: observed for abandoned calls, drawn (censored) for served ones."""
    by_type: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for c in calls:
        if c.wait_s > 0 or c.outcome == "HANG":
            by_type[c.call_type].append((c.wait_s, c.outcome == "HANG"))
    km = {t: KaplanMeier(obs) for t, obs in by_type.items()}
    rng = random.Random(seed)
    out: list[SimCall] = []
    for c in calls:
        if c.outcome == "HANG":
            patience: float | None = c.wait_s
        else:
            model = km.get(c.call_type)
            p = model.draw_beyond(c.wait_s, rng) if model else math.inf
            patience = None if math.isinf(p) else p
        out.append(
            SimCall(
                call_id=c.key,
                customer_id=c.customer_id,
                arrival=c.arrival,
                call_type=c.call_type,
                priority=c.priority,
                patience_s=patience,
            )
        )
    return out


class ServiceTimes:
    """Draws an advisor's service time for a call type from the log (see the module docstring)."""

    def __init__(self, calls: list[BankCall], min_own_samples: int = 5) -> None:
        own: dict[tuple[str, str], list[float]] = defaultdict(list)
        pool: dict[str, list[float]] = defaultdict(list)
        for c in calls:
            if c.service_s is not None and c.service_s > 0:
                pool[c.call_type].append(c.service_s)
                if c.server:
                    own[(c.server, c.call_type)].append(c.service_s)
        self.own = {k: sorted(v) for k, v in own.items()}
        self.pool = {k: sorted(v) for k, v in pool.items()}
        type_mean = {t: sum(v) / len(v) for t, v in self.pool.items()}
        self.all_mean = sum(sum(v) for v in self.pool.values()) / max(1, sum(len(v) for v in self.pool.values()))
        ratio_sum: dict[str, float] = defaultdict(float)
        ratio_n: dict[str, int] = defaultdict(int)
        for (server, t), v in self.own.items():
            ratio_sum[server] += sum(v) / type_mean[t]
            ratio_n[server] += len(v)
        self.speed_factor = {s: ratio_sum[s] / ratio_n[s] for s in ratio_sum}
        self.min_own = min_own_samples

    def draw(self, advisor: str, call_type: str, rng: random.Random) -> float:
        """One service time: the empirical quantile, at one uniform draw of *rng*, of the advisor's own
        sorted times for the type (else the type's pool x the advisor's speed factor).  With the same
        *rng* state, a call is as long, relative to each advisor's own times, whoever takes it."""
        u = rng.random()
        mine = self.own.get((advisor, call_type))
        if mine is not None and len(mine) >= self.min_own:
            return mine[int(u * len(mine))]
        pool = self.pool.get(call_type)
        factor = self.speed_factor.get(advisor, 1.0)
        if not pool:
            return self.all_mean * factor
        return pool[int(u * len(pool))] * factor

    def mean(self, advisor: str, call_type: str) -> float:
        """Expected service time of *advisor* on *call_type* under :meth:`draw`."""
        mine = self.own.get((advisor, call_type))
        if mine is not None and len(mine) >= self.min_own:
            return sum(mine) / len(mine)
        pool = self.pool.get(call_type) or [self.all_mean]
        return sum(pool) / len(pool) * self.speed_factor.get(advisor, 1.0)


def historical(
    calls: list[BankCall], shift_list: list[SimShift], sla_s: float = 20.0, short_abandon_s: float = 5.0
) -> dict[str, float | int]:
    """The log's own figures for these calls, with the same formulas as the simulation."""
    served = [c for c in calls if c.outcome == "AGENT"]
    abandoned = [c for c in calls if c.outcome == "HANG"]
    short = sum(1 for c in abandoned if c.wait_s < short_abandon_s)
    waits = sorted(c.wait_s for c in served)
    in_sla = sum(1 for w in waits if w <= sla_s)
    service = sum(c.service_s or 0.0 for c in served if c.server)
    staffed = sum(s.end - s.start for s in shift_list)
    return {
        "calls": len(calls),
        "answered": len(served),
        "abandoned": len(abandoned),
        "asa_s": sum(waits) / len(waits) if waits else 0.0,
        "aht_s": sum(c.service_s or 0.0 for c in served) / len(served) if served else 0.0,
        "abandon_rate": len(abandoned) / len(calls) if calls else 0.0,
        "service_level_20s": in_sla / max(1, len(served) + len(abandoned) - short),
        "p90_wait_s": percentile(waits, 0.9),
        "advisor_occupancy": service / staffed if staffed > 0 else 0.0,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values.

    >>> percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.9)
    9.0
    """
    if not sorted_values:
        return 0.0
    k = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[k]
