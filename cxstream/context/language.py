"""Message language detection: ``py3langid`` by default (langid.py's naive Bayes over byte n-grams,
its model in the wheel), or ``lingua`` (``lingua-language-detector``: n-gram models, Rust core).

``cxstream eval language`` measured both on the same sample (docs/INTEL.md "Languages"): at the same
accuracy of the answers given (0.98), py3langid answers more often, calls more real customer
messages in English English, and costs less than half of lingua's high-accuracy mode per message,
with about a third of its memory (75 against 207 MB) and of its loading time; so it is the default
and lingua the alternative (``CX_LANGUAGE_DETECTOR=lingua``, with its ``lingua`` extra installed).

The detector is restricted to a configured set of languages (``CX_LANGUAGES``): a restricted
set is both faster and more accurate on short text than every language, and a contact centre
only cares about the languages it serves or can route.  A message whose best language has a
confidence below ``CX_LANGUAGE_MIN_CONFIDENCE`` (both detectors' confidences over the configured
set add up to 1), or with fewer than :data:`MIN_LETTERS` letters, is ``"unknown"``.

Deterministic for a given text and configuration (so a replay rebuilds the same contexts).

>>> d = LanguageDetector(("en", "fr", "de"))
>>> d.detect("Bonjour, ma carte a été débitée deux fois, pouvez-vous m'aider ?").language
'fr'
>>> d.detect("ok").language
'unknown'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from itertools import islice
from typing import Any

UNKNOWN = "unknown"
#: The detectors ``CX_LANGUAGE_DETECTOR`` may name.
BACKENDS = ("py3langid", "lingua")
#: Fewer letters than this (placeholders like ``[card]`` aside) is too little to tell a language.
MIN_LETTERS = 4
#: Longer messages are detected on their first characters: enough to tell, and the cost stays flat.
MAX_CHARS = 300
#: The languages VADER (:mod:`cxstream.context.sentiment`) scores: its lexicon and rules are English.
SENTIMENT_LANGUAGES = frozenset({"en"})

_PLACEHOLDER = re.compile(r"\[[a-z_]+\]")  # what cxstream.context.redact leaves in the text
_LETTER = re.compile(r"[^\W\d_]")


class LanguageConfigError(ValueError):
    """A language configuration the detector cannot run with (an unknown code, too few languages...)."""


@dataclass(frozen=True, slots=True)
class Detection:
    """A message's language: an ISO 639-1 code of the configured set, or ``"unknown"``; and the detector's confidence."""

    language: str
    confidence: float


def primary(tag: str | None) -> str | None:
    """The primary subtag of a BCP 47 tag, lower case (what routing compares).

    >>> primary("en-GB"), primary("FR"), primary(None)
    ('en', 'fr', None)
    """
    return tag.split("-")[0].lower() if tag else None


def parse_languages(spec: str | Iterable[str]) -> tuple[str, ...]:
    """ISO 639-1 codes from a comma-separated setting (or a list), lower case, each once.

    >>> parse_languages("en, FR,de,en")
    ('en', 'fr', 'de')
    >>> parse_languages("")
    ()
    >>> parse_languages("en,english")
    Traceback (most recent call last):
    ...
    cxstream.context.language.LanguageConfigError: 'english' is not an ISO 639-1 code (two letters)
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in items:
        code = raw.strip().lower()
        if not code:
            continue
        if not re.fullmatch(r"[a-z]{2}", code):
            raise LanguageConfigError(f"{code!r} is not an ISO 639-1 code (two letters)")
        if code not in out:
            out.append(code)
    return tuple(out)


class LanguageDetector:
    """Detects a message's language among *languages* (ISO 639-1 codes, at least two) with *backend*.

    *low_accuracy*: lingua only, its low-accuracy mode (trigrams only: faster, weaker on short text).
    The model is loaded when the detector is built, not on the first message: the hot path never pays
    a load (lingua's low-accuracy mode aside, which loads on first use).
    """

    def __init__(
        self, languages: Iterable[str], min_confidence: float = 0.5, low_accuracy: bool = False, backend: str = "py3langid"
    ) -> None:
        codes = parse_languages(languages)
        if len(codes) < 2:
            raise LanguageConfigError(f"need at least two languages to detect among, got {list(codes)}")
        if not 0.0 <= min_confidence <= 1.0:
            raise LanguageConfigError(f"minimum confidence {min_confidence} is not in [0, 1]")
        if backend not in BACKENDS:
            raise LanguageConfigError(f"unknown language detector {backend!r}: use one of {', '.join(BACKENDS)}")
        self.languages = codes
        self.min_confidence = min_confidence
        self.low_accuracy = low_accuracy and backend == "lingua"
        self.backend = backend
        self._best: Callable[[str], tuple[str, float]] = (
            _langid(codes) if backend == "py3langid" else _lingua(codes, self.low_accuracy)
        )

    @property
    def name(self) -> str:
        """The detector and mode, as the evaluation names it."""
        return self.backend + (" (low accuracy)" if self.low_accuracy else " (high accuracy)" if self.backend == "lingua" else "")

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
        if next(islice(_LETTER.finditer(clean), MIN_LETTERS - 1, None), None) is None:  # fewer than MIN_LETTERS letters
            return Detection(UNKNOWN, 0.0)
        language, value = self._best(clean)
        confidence = round(value, 2)
        if confidence < self.min_confidence or confidence <= 0.0 or language not in self.languages:
            return Detection(UNKNOWN, confidence)
        return Detection(language, confidence)


@cache
def _langid(codes: tuple[str, ...]) -> Callable[[str], tuple[str, float]]:
    """py3langid's identifier restricted to *codes*, probabilities normalised over them (one per configuration)."""
    import numpy as np
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    unknown = [c for c in codes if c not in ident.nb_classes]
    if unknown:
        raise LanguageConfigError(f"py3langid does not detect {', '.join(map(repr, unknown))}")
    ident.set_languages(list(codes))
    # the restricted table as float32 rows: a message's scores gather its rows; gathered from the float16
    # column-major copy set_languages leaves, they were cast on every call (the same float32 values)
    ident.nb_ptc = np.ascontiguousarray(ident.nb_ptc, dtype=np.float32)

    def best(text: str) -> tuple[str, float]:
        language, p = ident.classify(text)
        return str(language), float(p)

    return best


@cache
def _lingua(codes: tuple[str, ...], low_accuracy: bool) -> Callable[[str], tuple[str, float]]:
    """A lingua detector restricted to *codes*, its models preloaded (one per configuration and process)."""
    try:
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder
    except ImportError as exc:
        raise LanguageConfigError("the lingua detector needs its package: pip install 'cxstream[lingua]'") from exc
    unknown = [c for c in codes if not hasattr(IsoCode639_1, c.upper())]
    if unknown:
        raise LanguageConfigError(f"lingua does not detect {', '.join(map(repr, unknown))}")
    builder = LanguageDetectorBuilder.from_languages(
        *(Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in codes)
    ).with_preloaded_language_models()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    detector: Any = builder.build()

    def best(text: str) -> tuple[str, float]:
        values = detector.compute_language_confidence_values(text)
        if not values:
            return UNKNOWN, 0.0
        return values[0].language.iso_code_639_1.name.lower(), float(values[0].value)

    return best


def sentiment_supported(language: str | None, supported: frozenset[str] = SENTIMENT_LANGUAGES) -> bool:
    """Can VADER score a message in *language*?

    >>> sentiment_supported("en-GB"), sentiment_supported("fr"), sentiment_supported("unknown")
    (True, False, False)
    """
    return primary(language) in supported
