"""Message language detection (lingua), what the context keeps of it, and sentiment only in English."""

from __future__ import annotations

import pytest

from cxstream.agents.scoring import Scorer, language_detector
from cxstream.context import ContextLimits, apply_interaction
from cxstream.context.language import UNKNOWN, Detection, LanguageConfigError, LanguageDetector, sentiment_supported
from cxstream.intel.eval_language import django_sample, evaluate_language
from cxstream.schemas import ContactRequest, Identifiers, InteractionEvent
from cxstream.streams.settings import Settings, SettingsError

FR = "Bonjour, ma carte bancaire a été débitée deux fois ce mois-ci, pouvez-vous m'aider ?"
EN = "Hello, my card was charged twice this month and nobody helps. Terrible service."


LANGS = ("en", "fr", "de", "es", "it", "nl", "pt")


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector(LANGS, min_confidence=0.5)


@pytest.mark.parametrize("backend", ["py3langid", "lingua"])
def test_detects_the_configured_languages_and_says_unknown_below_the_confidence(backend: str) -> None:
    detector = LanguageDetector(LANGS, min_confidence=0.5, backend=backend)
    assert detector.detect(FR).language == "fr"
    assert detector.detect(EN).language == "en"
    assert detector.detect("Guten Tag, ich möchte meinen Vertrag kündigen.").language == "de"
    assert detector.detect("ok").language == UNKNOWN  # too few letters to tell
    assert detector.detect("[card] [email] 12345").language == UNKNOWN  # only redaction placeholders
    strict = LanguageDetector(("en", "nl"), min_confidence=0.999, backend=backend)
    found = strict.detect("Hallo, dank je")
    assert found.language == UNKNOWN and 0 < found.confidence < 0.999


def test_bad_configuration_is_a_clear_error() -> None:
    with pytest.raises(LanguageConfigError, match="'english' is not an ISO 639-1 code"):
        LanguageDetector(("en", "english"))
    with pytest.raises(LanguageConfigError, match="py3langid does not detect 'xx'"):
        LanguageDetector(("en", "xx"))
    with pytest.raises(LanguageConfigError, match="lingua does not detect 'xx'"):
        LanguageDetector(("en", "xx"), backend="lingua")
    with pytest.raises(LanguageConfigError, match="at least two"):
        LanguageDetector(("en",))
    with pytest.raises(LanguageConfigError, match="unknown language detector 'cld9'"):
        LanguageDetector(("en", "fr"), backend="cld9")
    with pytest.raises(SettingsError, match="CX_LANGUAGES"):
        language_detector(Settings(languages="en,klingon"))
    with pytest.raises(SettingsError, match="CX_LANGUAGE_DETECTOR"):
        Settings(language_detector="cld9")
    with pytest.raises(SettingsError, match="CX_LANGUAGE_MIN_CONFIDENCE"):
        Settings(language_min_confidence=1.5)
    assert language_detector(Settings(languages="en")) is None  # detection off


def _ev(n: int, text: str, kind: str = "message", language: str | None = None) -> InteractionEvent:
    return InteractionEvent(event_id=f"e{n}", occurred_at=1000.0 + n, channel="chat", kind=kind,  # type: ignore[arg-type]
                            customer=Identifiers(customer_id="C"), contact_id="k1", text=text, language=language,
                            needs_advisor=kind == "contact_opened")


def test_a_french_message_keeps_its_language_has_sentiment_unknown_and_routes_in_french(detector: LanguageDetector) -> None:
    scorer = Scorer(detector)
    ctx, fx = apply_interaction(None, _ev(1, FR, "contact_opened"), "C", redacted_text=FR, detected=scorer.detect_language(FR))
    [req] = fx.routing
    assert isinstance(req, ContactRequest) and req.language == "fr"
    ctx, _ = apply_interaction(ctx, _ev(2, "C'est vraiment inacceptable, je suis très déçu."), "C",
                               redacted_text="C'est vraiment inacceptable, je suis très déçu.",
                               detected=scorer.detect_language("C'est vraiment inacceptable, je suis très déçu."))
    msg = ctx.recent[0]
    assert (msg.language, msg.language_detected, msg.sentiment, msg.sentiment_label) == ("fr", "fr", None, "unknown")
    assert msg.language_confidence is not None and msg.language_confidence >= 0.5
    assert ctx.language == "fr" and ctx.preferred_language == "fr" and ctx.sentiment_recent == []


def test_english_is_scored_and_a_confident_detection_overrides_the_channels_tag(detector: LanguageDetector) -> None:
    ctx, _ = apply_interaction(None, _ev(1, EN, language="fr"), "C", redacted_text=EN, detected=detector.detect(EN))
    msg = ctx.recent[0]
    assert msg.language == "en" and msg.sentiment is not None and msg.sentiment < 0 and msg.sentiment_label == "negative"
    ctx, _ = apply_interaction(None, _ev(1, EN, language="en-GB"), "C", redacted_text=EN, detected=detector.detect(EN))
    assert ctx.recent[0].language == "en-GB"  # the channel's more precise tag is kept when they agree


def test_an_unknown_short_message_is_scored_only_if_the_customer_usually_writes_english(detector: LanguageDetector) -> None:
    ctx, _ = apply_interaction(None, _ev(1, EN), "C", redacted_text=EN, detected=detector.detect(EN))
    ctx, _ = apply_interaction(ctx, _ev(2, "thx!!"), "C", redacted_text="thx!!", detected=detector.detect("thx!!"))
    assert ctx.recent[0].language_detected == UNKNOWN and ctx.recent[0].sentiment_label in ("positive", "neutral", "negative")
    fresh, _ = apply_interaction(None, _ev(3, "thx!!"), "C", redacted_text="thx!!", detected=detector.detect("thx!!"))
    assert fresh.recent[0].sentiment is None and fresh.recent[0].sentiment_label == "unknown"


def test_without_detection_sentiment_is_scored_as_before_except_in_a_tagged_unsupported_language() -> None:
    ctx, _ = apply_interaction(None, _ev(1, EN), "C", redacted_text=EN)
    assert ctx.recent[0].sentiment is not None and ctx.recent[0].language_detected is None
    ctx, _ = apply_interaction(None, _ev(1, FR, language="fr"), "C", redacted_text=FR, limits=ContextLimits())
    assert ctx.recent[0].sentiment is None and ctx.recent[0].sentiment_label == "unknown"
    assert sentiment_supported("en-US") and not sentiment_supported(None)


def test_a_detection_is_a_pure_function_of_the_text() -> None:
    a = LanguageDetector(("en", "fr"))
    b = LanguageDetector(("fr", "en"))
    assert a.detect(FR) == b.detect(FR) == Detection("fr", a.detect(FR).confidence)


def test_eval_language_on_djangos_catalogues_measures_accuracy_confusion_and_cost() -> None:
    rows = django_sample(("en", "fr"))
    assert len(rows) > 300 and {lang for _, lang in rows} == {"en", "fr"}
    res = evaluate_language(("en", "fr"), 0.5)
    assert [m["mode"] for m in res["modes"]] == ["py3langid", "lingua (high accuracy)", "lingua (low accuracy)"]
    assert res["cost_interleaved"]["py3langid"]["p50_over_default"] == 1.0
    for m in res["modes"]:
        assert m["thresholds"][0]["accuracy"] > 0.85
        assert m["per_language"]["fr"]["n"] > 100 and set(m["confusion"]) == {"en", "fr"}
        assert m["us_per_message_mean"] > 0 and m["outside_set"]["n"] > 0


def test_cxstream_run_refuses_an_unknown_language_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from cxstream.cli import main as cli

    monkeypatch.setenv("CX_LANGUAGES", "en,xx")
    monkeypatch.setenv("CX_DATA_DIR", str(tmp_path))
    assert cli(["run"]) == 2  # before any server starts
    assert "CX_LANGUAGES='en,xx': py3langid does not detect 'xx'" in capsys.readouterr().err
    assert not (tmp_path / "broker").exists()


def test_eval_language_on_real_customer_messages_counts_what_is_not_called_english() -> None:
    from cxstream.intel.eval_language import evaluate_chat

    res = evaluate_chat([EN, FR, "ok"], ("en", "fr"), 0.5, low_accuracy=False)
    assert (res["n"], res["detected"]) == (3, {"en": 1, "fr": 1, "unknown": 1})
    assert res["english"] == round(1 / 3, 4) and res["other_language"] == round(1 / 3, 4)
