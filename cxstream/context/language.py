"""Message language detection with lingua (``lingua-language-detector``: n-gram models, Rust core).

The detector is restricted to a configured set of languages (``CX_LANGUAGES``): a restricted
set is both faster and more accurate on short text than all 75 languages, and a contact centre
only cares about the languages it serves or can route.  A message whose best language has a
confidence below ``CX_LANGUAGE_MIN_CONFIDENCE`` (lingua's confidence values over the configured
set add up to 1), or with fewer than :data:`MIN_LETTERS` letters, is ``"unknown"``.

Deterministic for a given text and configuration (so a replay rebuilds the same contexts);
the cost per message, per mode, is measured by ``cxstream eval language`` (docs/INTEL.md).

>>> d = LanguageDetector(("en", "fr", "de"))
>>> d.detect("Bonjour, ma carte a été débitée deux fois, pouvez-vous m'aider ?").language
'fr'
>>> d.detect("ok").language
'unknown'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from lingua import IsoCode639_1, Language, LanguageDetectorBuilder
from lingua import LanguageDetector as _Lingua

UNKNOWN = "unknown"
#: Fewer letters than this (placeholders like ``[card]`` aside) is too little to tell a language.
MIN_LETTERS = 4
#: Longer messages are detected on their first characters: enough to tell, and the cost stays flat.
MAX_CHARS = 300
#: The languages VADER (:mod:`cxstream.context.sentiment`) scores: its lexicon and rules are English.
SENTIMENT_LANGUAGES = frozenset({"en"})

_PLACEHOLDER = re.compile(r"\[[a-z_]+\]")  # what cxstream.context.redact leaves in the text
_LETTER = re.compile(r"[^\W\d_]")


class LanguageConfigError(ValueError):
    """A configured language code lingua does not know."""


@dataclass(frozen=True, slots=True)
class Detection:
    """A message's language: an ISO 639-1 code of the configured set, or ``"unknown"``; and lingua's confidence."""

    language: str
    confidence: float


def primary(tag: str | None) -> str | None:
    """The primary subtag of a BCP 47 tag, lower case (what routing compares).

    >>> primary("en-GB"), primary("FR"), primary(None)
    ('en', 'fr', None)
    """
    return tag.split("-")[0].lower() if tag else None


def parse_languages(spec: str | Iterable[str]) -> tuple[str, ...]:
    """ISO 639-1 codes from a comma-separated setting (or a list), checked against lingua's.

    >>> parse_languages("en, FR,de")
    ('en', 'fr', 'de')
    >>> parse_languages("")
    ()
    >>> parse_languages("en,xx")
    Traceback (most recent call last):
    ...
    cxstream.context.language.LanguageConfigError: 'xx' is not an ISO 639-1 code lingua detects
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in items:
        code = raw.strip().lower()
        if not code:
            continue
        if not hasattr(IsoCode639_1, code.upper()):
            raise LanguageConfigError(f"{code!r} is not an ISO 639-1 code lingua detects")
        if code not in out:
            out.append(code)
    return tuple(out)


def _lingua_language(code: str) -> Language:
    return Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))


class LanguageDetector:
    """Detects a message's language among *languages* (ISO 639-1 codes, at least two).

    *low_accuracy*: lingua's low-accuracy mode (trigrams only: ~4x faster, weaker on short text).
    Models are loaded when the detector is built (``with_preloaded_language_models``), not on
    the first message: the hot path never pays a load.
    """

    def __init__(self, languages: Iterable[str], min_confidence: float = 0.5, low_accuracy: bool = False) -> None:
        codes = parse_languages(languages)
        if len(codes) < 2:
            raise LanguageConfigError(f"need at least two languages to detect among, got {list(codes)}")
        if not 0.0 <= min_confidence <= 1.0:
            raise LanguageConfigError(f"minimum confidence {min_confidence} is not in [0, 1]")
        self.languages = codes
        self.min_confidence = min_confidence
        self.low_accuracy = low_accuracy
        self._detector = _build(codes, low_accuracy)

    def detect(self, text: str | None) -> Detection:
        """The language of *text* (``"unknown"`` when too short or not confident enough).

        >>> d = LanguageDetector(("en", "de"), min_confidence=0.9)
        >>> d.detect("Hallo, ich möchte meinen Vertrag kündigen, bitte.")
        Detection(language='de', confidence=1.0)
        >>> d.detect("[card] [phone]").language
        'unknown'
        """
        if not text:
            return Detection(UNKNOWN, 0.0)
        clean = _PLACEHOLDER.sub(" ", text[:MAX_CHARS])
        if len(_LETTER.findall(clean)) < MIN_LETTERS:
            return Detection(UNKNOWN, 0.0)
        values = self._detector.compute_language_confidence_values(clean)
        if not values:
            return Detection(UNKNOWN, 0.0)
        best = values[0]
        confidence = round(float(best.value), 2)
        if confidence < self.min_confidence or confidence <= 0.0:
            return Detection(UNKNOWN, confidence)
        return Detection(best.language.iso_code_639_1.name.lower(), confidence)


@cache
def _build(codes: tuple[str, ...], low_accuracy: bool) -> _Lingua:
    """One lingua detector per configuration and process (its models are shared, read-only)."""
    builder = LanguageDetectorBuilder.from_languages(*(_lingua_language(c) for c in codes))
    builder = builder.with_preloaded_language_models()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


def sentiment_supported(language: str | None, supported: frozenset[str] = SENTIMENT_LANGUAGES) -> bool:
    """Can VADER score a message in *language*?

    >>> sentiment_supported("en-GB"), sentiment_supported("fr"), sentiment_supported("unknown")
    (True, False, False)
    """
    return primary(language) in supported
