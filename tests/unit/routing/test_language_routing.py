"""Routing by language skill: a contact in a language goes to an advisor who serves it; the fallback
after ``language_fallback_sla`` x SLA strands no contact, and the assignment's reasons say so."""

from __future__ import annotations

from cxstream.routing import Router
from cxstream.routing.config import RoutingConfig
from cxstream.schemas.outputs import Assignment

from .routing_fixtures import login, request, tick


def assignments(outs: list[object]) -> list[Assignment]:
    return [o for o in outs if isinstance(o, Assignment)]


def test_a_french_contact_goes_to_the_advisor_who_serves_french_though_another_was_idle_longer() -> None:
    r = Router()
    r.apply(login("anna_en", 0.0, languages=["en"], capacity={"chat": 2}))
    r.apply(login("bruno_fr", 50.0, languages=["fr", "en"], capacity={"chat": 2}))
    [a] = assignments(r.apply(request("c1", 100.0, channel="chat", language="fr")))
    assert a.advisor_id == "bruno_fr" and a.reasons["language_match"] == 1.0 and "language_fallback" not in a.reasons
    assert a.language == "fr"


def test_no_advisor_serves_the_language_the_contact_waits_until_the_fallback_then_anyone_takes_it() -> None:
    cfg = RoutingConfig(language_fallback_sla=0.5)  # chat SLA 60 s: the fallback at 30 s
    r = Router(config=cfg)
    r.apply(login("anna_en", 0.0, languages=["en"], capacity={"chat": 2}))
    assert assignments(r.apply(request("c1", 100.0, channel="chat", language="pt"))) == []
    assert assignments(r.apply(tick(129.0))) == []
    assert r.next_deadline() == 130.0
    [a] = assignments(r.apply(tick(131.0)))
    assert a.advisor_id == "anna_en" and a.decided_at == 130.0
    assert a.reasons["language_fallback"] == 1.0 and a.reasons["language_match"] == 0.0


def test_the_fallback_restores_nothing_a_speaker_could_have_taken() -> None:
    r = Router(config=RoutingConfig(language_fallback_sla=0.5))
    r.apply(login("anna_en", 0.0, languages=["en"], capacity={"chat": 2}))
    assert assignments(r.apply(request("c1", 100.0, channel="chat", language="de"))) == []
    [a] = assignments(r.apply(login("dora_de", 110.0, languages=["de"], capacity={"chat": 2})))
    assert a.advisor_id == "dora_de" and a.reasons["language_match"] == 1.0


def test_without_language_skills_the_language_is_not_required_and_without_fallback_it_always_is() -> None:
    r = Router(config=RoutingConfig(language_skills=False))
    r.apply(login("anna_en", 0.0, languages=["en"], capacity={"chat": 2}))
    [a] = assignments(r.apply(request("c1", 100.0, channel="chat", language="fr")))
    assert a.advisor_id == "anna_en" and a.reasons["language_match"] == 0.0 and "language_fallback" not in a.reasons
    strict = Router(config=RoutingConfig(language_fallback_sla=0.0))
    strict.apply(login("anna_en", 0.0, languages=["en"], capacity={"chat": 2}))
    assert assignments(strict.apply(request("c1", 100.0, channel="chat", language="fr"))) == []
    assert assignments(strict.apply(tick(100_000.0))) == []


def test_the_fallback_survives_a_restore_of_the_router_state() -> None:
    r = Router(config=RoutingConfig(language_fallback_sla=0.5))
    r.apply(login("anna_en", 0.0, languages=["en"], capacity={"chat": 2}))
    r.apply(request("c1", 100.0, channel="chat", language="pt"))
    restored = Router.from_state(r.to_state())
    [a] = assignments(restored.apply(tick(131.0)))
    assert a.advisor_id == "anna_en" and a.reasons["language_fallback"] == 1.0
