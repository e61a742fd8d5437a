"""The bank-log adapter, the simulation and the eval entry point, on a tiny log written here."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

from cxstream.replay import bank_log, eval_routing
from cxstream.routing import RoutingConfig
from cxstream.routing.simulate import SimCall, SimShift, simulate

HEADER = "vru+line\tcall_id\tcustomer_id\tpriority\ttype\tdate\tvru_entry\tvru_exit\tvru_time\tq_start\tq_exit\tq_time\toutcome\tser_start\tser_exit\tser_time\tserver"


def row(
    i: int, typ: str, q_start: str, q_time: int, outcome: str, ser_start: str, ser_time: int, server: str, prio: int = 0
) -> str:
    return "\t".join(
        [
            "AA0101",
            str(i),
            str(1000 + i),
            str(prio),
            typ,
            "990104",
            "0:00:00",
            q_start if q_start != "0:00:00" else ser_start,
            "5",
            q_start,
            "0:00:00",
            str(q_time),
            outcome,
            ser_start,
            "0:00:00",
            str(ser_time),
            server,
        ]
    )


def tiny_log(tmp_path: Path) -> Path:
    lines = [HEADER]
    for k in range(40):
        h, m = 9 + k // 20, (k % 20) * 3
        t = f"{h}:{m:02d}:00"
        s = f"{h}:{m:02d}:10"
        if k % 7 == 3:
            lines.append(row(k, "PS", t, 30 + k, "HANG", "0:00:00", 0, "NO_SERVER"))
        else:
            server = "FAST" if k % 2 else "SLOW"
            lines.append(
                row(
                    k,
                    "PS" if k % 5 else "NE",
                    t,
                    10,
                    "AGENT",
                    s,
                    60 if server == "FAST" else 150,
                    server,
                    prio=2 * (k % 3 == 0),
                )
            )
    lines.append(row(99, "PS", "0:00:00", 0, "PHANTOM", "0:00:00", 0, "NO_SERVER"))
    p = tmp_path / "log.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_reader_keeps_queue_calls_and_builds_shifts(tmp_path: Path) -> None:
    calls = bank_log.read_calls(tiny_log(tmp_path))
    assert len(calls) == 40 and {c.outcome for c in calls} == {"AGENT", "HANG"}
    assert [c.arrival for c in calls] == sorted(c.arrival for c in calls)
    shifts = bank_log.shifts(calls)
    assert {s.advisor_id for s in shifts} == {"FAST", "SLOW"}
    assert all(s.end > s.start for s in shifts) and "PS" in shifts[0].skills
    hist = bank_log.historical(calls, shifts)
    assert hist["abandoned"] == 6 and 0 < hist["advisor_occupancy"] < 1


def test_patience_is_observed_for_abandons_and_censored_for_served(tmp_path: Path) -> None:
    calls = bank_log.read_calls(tiny_log(tmp_path))
    sims = bank_log.sim_calls(calls, seed=1)
    for c, s in zip(calls, sims, strict=True):
        if c.outcome == "HANG":
            assert s.patience_s == c.wait_s
        else:
            assert s.patience_s is None or s.patience_s > c.wait_s
    km = bank_log.KaplanMeier([(5, True), (10, False), (20, True), (40, False)])
    assert km.survival(0) == 1.0 and km.survival(5) == 0.75
    rng = random.Random(0)
    draws = [km.draw_beyond(10.0, rng) for _ in range(200)]
    assert set(draws) <= {20.0, math.inf} and 20.0 in draws and math.inf in draws


def test_service_times_come_from_the_advisors_own_history(tmp_path: Path) -> None:
    calls = bank_log.read_calls(tiny_log(tmp_path))
    times = bank_log.ServiceTimes(calls)
    rng = random.Random(0)
    assert {times.draw("FAST", "PS", rng) for _ in range(20)} == {60.0}
    # pooled, scaled by speed; the same draw (common random numbers) is longer for the slower advisor
    for seed in range(10):
        assert times.draw("SLOW", "NE", random.Random(seed)) > times.draw("FAST", "NE", random.Random(seed))


def test_simulation_is_deterministic_and_consistent() -> None:
    calls = [
        SimCall(call_id=f"c{i}", customer_id="u", arrival=100.0 + 20 * i, call_type="PS", patience_s=30.0)
        for i in range(30)
    ]
    shifts = [SimShift(advisor_id="A", start=90.0, end=2000.0, skills={"PS": 3})]

    def service(adv: str, typ: str, rng: random.Random) -> float:
        return rng.uniform(10, 60)

    a = simulate(calls, shifts, RoutingConfig(), service, seed=3)
    b = simulate(calls, shifts, RoutingConfig(), service, seed=3)
    assert [(o.answered_at, o.abandoned_at, o.service_s) for o in a.outcomes] == [
        (o.answered_at, o.abandoned_at, o.service_s) for o in b.outcomes
    ]
    for o in a.outcomes:
        assert (o.answered_at is None) != (o.abandoned_at is None)
        if o.abandoned_at is not None:
            assert o.abandoned_at - o.arrival == 30.0
    answered = sorted(
        (o.answered_at, o.answered_at + (o.service_s or 0)) for o in a.outcomes if o.answered_at is not None
    )
    for (_s1, e1), (s2, _) in itertools.pairwise(answered):
        assert s2 >= e1  # one advisor, one call at a time
    assert a.events["abandoned"] == sum(o.abandoned_at is not None for o in a.outcomes) > 0


def test_eval_main_writes_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert eval_routing.main(["--log", str(tiny_log(tmp_path)), "--policy", "fifo", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    for key in (
        "policy",
        "calls",
        "asa_s",
        "aht_s",
        "abandon_rate",
        "service_level_20s",
        "p90_wait_s",
        "advisor_occupancy",
    ):
        assert key in doc and (key == "policy" or key in doc["historical"])
    assert doc["policy"] == "fifo" and doc["calls"] == 40
    out2 = tmp_path / "all.json"
    assert (
        eval_routing.main(
            ["--log", str(tiny_log(tmp_path)), "--policy", "fifo,skills,default", "--json", str(out2), "--wrap-up", "5"]
        )
        == 0
    )
    runs = json.loads(out2.read_text())["runs"]
    assert [r["policy"] for r in runs] == ["fifo", "skills", "default"]
