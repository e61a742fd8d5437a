"""The three pages in a real browser against the real engine: an advisor handles a customer's chat end to end.

``cxstream run`` on its embedded Apache Kafka and Redis (as ``make run``), Debian's
chromium driven by Playwright, axe-core (npm) injected into each page.  An advisor signs in
on ``/desk`` with a desk key, a customer opens a chat on ``/chat``, the offer shows on the
desk with its countdown and is accepted from the keyboard, the customer's context shows
(and then their call on another channel, replayed with ``cxstream replay``), the advisor
completes the contact with a disposition naming the document used, and ``/wallboard`` counts it; a
similar chat then gets that document suggested on the desk.  Screenshots of the
three pages are written to ``var/test-artifacts/pages/`` (or ``$CX_TEST_ARTIFACTS``).

``make test`` installs chromium and axe-core first; without them this test fails, never skips.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_restart import KEY, Engine

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CX_CHROMIUM", "/usr/bin/chromium"))
AXE = ROOT / ".cache/browser-tests/node_modules/axe-core/axe.min.js"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
TIMEOUT_MS = 45_000


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    base = tmp_path_factory.mktemp("pages")
    routing = base / "routing.toml"
    routing.write_text("[default]\noffer_timeout_s = 120.0\n")  # a slow CI machine must not lose the offer
    e = Engine(base / "var", routing)
    e.start()
    yield e
    e.ctrl_c()


@pytest.fixture()
def artifacts(request: pytest.FixtureRequest) -> Path:
    path = Path(os.environ.get("CX_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts")) / "pages"
    path.mkdir(parents=True, exist_ok=True)
    request.config.stash.setdefault(ARTIFACTS_KEY, []).append(str(path))
    return path


ARTIFACTS_KEY = pytest.StashKey[list[str]]()


def post(engine: Engine, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{engine.port}{path}", data=json.dumps(body or {}).encode(), method="POST",
                                 headers={"X-API-Key": KEY})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def serious(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on *page* (WCAG 2.x A/AA rules and best practices)."""
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations.map(v => (
             {id: v.id, impact: v.impact, help: v.help, targets: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def figure(page: Any, name: str) -> str:
    return str(page.locator(f'[data-group="default"] [data-figure="{name}"]').inner_text())


def churn_model_knows(engine: Engine, labels: int, timeout: float = 60.0) -> None:
    """Wait until the learner has published a churn model that learned *labels* outcomes, and the scorer loaded it.

    The learner publishes every ``CX_SNAPSHOT_INTERVAL_S`` while labels arrive, so a first model may
    know only a few (its risk all base rate, no reasons); ``/wallboard/data`` says how many the
    newest published one had seen.  The scorer checks Redis every ``CX_MODEL_REFRESH_S`` (1 s)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < labels:
        assert time.monotonic() < deadline, f"the churn model learned {seen} of {labels} outcomes in {timeout:.0f} s"
        time.sleep(0.25)
        req = urllib.request.Request(f"http://127.0.0.1:{engine.port}/wallboard/data", headers={"X-API-Key": KEY})
        with urllib.request.urlopen(req, timeout=10) as resp:
            seen = int((json.loads(resp.read()).get("models", {}).get("churn") or {}).get("labels_seen") or 0)
    time.sleep(2.0)  # two scorer refreshes


def crm_history(tag: str, customers: int = 40) -> list[dict[str, Any]]:
    """Profiles of past customers, then their churn outcomes: the month-to-month ones churned, the two-year
    ones stayed, at every tenure (so the contract is what the model learns, in whatever order it learns)."""
    at = time.time() - 3600
    out: list[dict[str, Any]] = []
    for i in range(customers):
        monthly = i % 2 == 1
        who = {"email": f"past-{tag}-{i}@example.org"}
        out.append({"type": "cx.OutcomeEvent.v1", "event_id": f"crm-{tag}-p{i}", "occurred_at": at + i, "kind": "profile",
                    "customer": who, "attributes": {"contract": "Month-to-month" if monthly else "Two year",
                                                    "tenure_months": 1 + (i * 7) % 60}})
    for i in range(customers):
        out.append({"type": "cx.OutcomeEvent.v1", "event_id": f"crm-{tag}-o{i}", "occurred_at": at + 100 + i,
                    "kind": "churned" if i % 2 == 1 else "retained", "customer": {"email": f"past-{tag}-{i}@example.org"}})
    return out


def test_an_advisor_handles_a_customers_chat_on_the_desk_and_the_wallboard_counts_it(engine: Engine, artifacts: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"no browser at {CHROMIUM}: 'make test' installs Debian's chromium (apt-get install -y chromium)")
    if not AXE.exists():
        pytest.fail(f"no axe-core at {AXE}: 'make test' installs it (make browser-deps)")
    from playwright.sync_api import expect, sync_playwright

    base = f"http://127.0.0.1:{engine.port}"
    advisor = f"tess-{uuid.uuid4().hex[:6]}"
    desk_key = post(engine, f"/advisors/{advisor}/key")["key"]
    email, phone = f"pat-{uuid.uuid4().hex[:6]}@example.org", "+44 7700 900123"
    errors: list[str] = []
    # a CRM's history (profiles, then who churned) trains the churn model while the advisor signs in
    crm = artifacts.parent / f"crm-{advisor}.jsonl"
    crm.write_text("".join(json.dumps(x) + "\n" for x in crm_history(advisor)))
    engine.replay(crm)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})  # axe is injected inline
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        desk, board, chat = context.new_page(), context.new_page(), context.new_page()
        for p in (desk, board, chat):
            p.on("pageerror", lambda exc: errors.append(str(exc)))

        # the advisor signs in with a desk key of their own
        desk.goto(f"{base}/desk")
        desk.get_by_label("Advisor id").fill(advisor)
        desk.get_by_label("Desk key (or the API key)").fill(desk_key)
        desk.get_by_label("Skills (name:level 1–5, comma-separated)").fill("billing:4")
        desk.get_by_role("button", name="Sign in").click()
        expect(desk.locator("#status")).to_contain_text("Signed in")

        # the supervisor's wallboard sees the advisor signed in
        board.goto(f"{base}/wallboard#key={KEY}")
        expect(board.locator('[data-group="default"] [data-figure="logged_in"]')).to_have_text("1")
        completed_before, answered_before = int(figure(board, "completed")), int(figure(board, "answered"))

        # a customer opens a chat
        chat.goto(f"{base}/chat#key={KEY}")
        chat.get_by_label("E-mail").fill(email)
        chat.get_by_label("Your message").fill("I was charged twice on my bill this month")
        chat.get_by_role("button", name="Send").click()
        expect(chat.get_by_role("log")).to_contain_text("an advisor will be with you shortly")

        # the offer reaches the desk live, with its countdown; the advisor accepts it from the keyboard
        offer = desk.locator("#offers .card")
        expect(offer).to_have_count(1)
        expect(offer.locator(".countdown")).to_have_text(re.compile(r"^\d+ s left to answer$"))
        expect(offer.get_by_role("button", name=re.compile("^Accept chat contact"))).to_be_visible()
        desk.evaluate("document.activeElement && document.activeElement.blur()")
        desk.keyboard.press("a")
        expect(desk.locator("#contacts .card")).to_have_count(1)
        expect(desk.locator("#offers")).to_contain_text("No offer waiting.")

        # beside the contact: the customer's context, and the router's reasons for this advisor
        ctx = desk.locator("#ctx")
        expect(ctx).to_contain_text(email)
        expect(ctx.locator("#recent")).to_contain_text("charged twice")
        expect(ctx).to_contain_text("Why you were chosen")
        expect(ctx).to_contain_text("expected handle")  # the default policy's score: the handle time it expects
        expect(ctx).to_contain_text(re.compile(r"Open contacts \(1\)"))

        # the same person calls in (a voice system's events, replayed): the desk shows the journey across channels
        call = artifacts.parent / f"call-{advisor}.jsonl"
        now = time.time()
        churn_model_knows(engine, len(crm_history(advisor)) // 2)
        call.write_text("".join(json.dumps(x) + "\n" for x in [
            {"type": "cx.OutcomeEvent.v1", "event_id": f"crm-{advisor}-pat", "occurred_at": now - 1, "kind": "profile",
             "customer": {"email": email}, "attributes": {"contract": "Month-to-month", "tenure_months": 2}},
            {"type": "cx.InteractionEvent.v1", "event_id": f"voice-{advisor}-1", "occurred_at": now, "channel": "voice",
             "kind": "contact_opened", "customer": {"email": email, "phone": phone}, "contact_id": f"call-{advisor}"},
            {"type": "cx.InteractionEvent.v1", "event_id": f"voice-{advisor}-2", "occurred_at": now + 0.1, "channel": "voice",
             "kind": "message", "customer": {"phone": phone}, "contact_id": f"call-{advisor}", "text": "calling about the double charge"},
        ]))
        engine.replay(call)
        expect(ctx.locator("#recent")).to_contain_text("calling about the double charge")
        expect(ctx).to_contain_text(re.compile(r"voice \(\d+\)"))
        expect(ctx).to_contain_text("+447700900123")
        # the CRM's facts give a churn risk, and the model's own reasons for it
        expect(ctx.locator("#churn-reasons")).to_contain_text("contract: Month-to-month")
        # and its health score with the factors that move it, and the language of the last message (detected)
        expect(ctx.locator("#health")).to_contain_text(re.compile(r"Health \d+ / 100"))
        expect(ctx.locator("#health-factors")).to_contain_text("tenure (months): 2 (-9 points)")
        expect(ctx.locator("#health")).to_contain_text("detected en")
        # the next-best-action block: the contact's ranked actions with why; the recommendation preset as the action taken
        expect(desk.locator("#nba-ranked li")).to_have_count(4)
        expect(desk.locator("#nba")).to_contain_text("chosen with probability")
        expect(desk.get_by_label("Action taken (sent with the completion)")).not_to_have_value("")
        desk.screenshot(path=str(artifacts / "desk.png"), full_page=True)
        assert serious(desk) == []

        # suggested knowledge: nothing learned yet, and the block says so
        expect(desk.locator("#assist-list")).to_contain_text("No document learned yet")

        # complete with a disposition that names the document used
        desk.get_by_label("Document used").fill("kb-double-charge")
        desk.get_by_label("True intent").fill("billing")
        desk.get_by_label("Resolved?").select_option("true")
        desk.get_by_label("Notes").fill("refunded the second charge")
        desk.get_by_role("button", name="Complete contact").click()
        expect(desk.locator("#contacts")).to_contain_text("No contact in hand.")
        expect(desk.locator("#status")).to_contain_text("Completed contact")

        # the wallboard counts the answered and completed contact
        expect(board.locator('[data-group="default"] [data-figure="completed"]')).to_have_text(str(completed_before + 1))
        expect(board.locator('[data-group="default"] [data-figure="answered"]')).to_have_text(str(answered_before + 1))
        expect(board.locator("#latency-plot polyline").first).to_be_attached()
        board.screenshot(path=str(artifacts / "wallboard.png"), full_page=True)
        assert serious(board) == []

        # that document taught the suggestions: a similar chat gets it suggested on the desk, with why, and "Use" fills it in
        post(engine, "/chat/messages", {"email": f"sam-{advisor}@example.org", "text": "charged twice on my bill, please refund"})
        expect(desk.locator("#offers .card")).to_have_count(1)
        suggestion = desk.locator('#assist-suggestions li[data-document="kb-double-charge"]')
        expect(suggestion).to_contain_text("matching words")
        expect(suggestion).to_contain_text("resolved 1 of 1")
        desk.evaluate("document.activeElement && document.activeElement.blur()")
        desk.keyboard.press("a")
        expect(desk.locator("#contacts .card")).to_have_count(1)
        suggestion.get_by_role("button", name="Use kb-double-charge in the disposition").click()
        expect(desk.get_by_label("Document used")).to_have_value("kb-double-charge")
        desk.screenshot(path=str(artifacts / "desk-suggestions.png"), full_page=True)
        assert serious(desk) == []

        chat.screenshot(path=str(artifacts / "chat.png"), full_page=True)
        assert serious(chat) == []
        browser.close()
    assert errors == [], errors
