"""Message sentiment with VADER (vaderSentiment: a validated lexicon and rules for short social text).

Hutto & Gilbert (ICWSM 2014).  The compound score is in [-1, 1]; VADER's own
thresholds call >= 0.05 positive and <= -0.05 negative.  Deterministic, no I/O after
the lexicon is loaded (once, ~50 ms: by :func:`preload` when the engine starts, else on the
first message), ~0.2 ms per short message.
"""

from __future__ import annotations

from functools import cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

#: Longer texts are scored on their first characters: the score is for routing, not literature.
MAX_CHARS = 1000


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def preload() -> None:
    """Load the lexicon now, so that the first message scored does not wait ~50 ms for it.

    >>> preload(); _analyzer.cache_info().currsize
    1
    """
    _analyzer()


def sentiment(text: str) -> float:
    """VADER compound score of *text*, rounded to 3 decimals.

    >>> sentiment("Thanks so much, great help, you are wonderful!")
    0.935
    >>> sentiment("My card was charged twice and nobody helps. Terrible.")
    -0.318
    >>> sentiment("")
    0.0
    """
    if not text or not text.strip():
        return 0.0
    return round(float(_analyzer().polarity_scores(text[:MAX_CHARS])["compound"]), 3)


def label(score: float) -> str:
    """VADER's conventional label for a compound score.

    >>> [label(s) for s in (0.6, 0.0, -0.3)]
    ['positive', 'neutral', 'negative']
    """
    return "positive" if score >= 0.05 else "negative" if score <= -0.05 else "neutral"


def trend(scores: list[float]) -> float | None:
    """Least-squares slope of the scores per message (None for fewer than 3): > 0 improving.

    >>> trend([-0.8, -0.4, 0.0, 0.4])
    0.4
    >>> trend([0.5, 0.5]) is None
    True
    """
    n = len(scores)
    if n < 3:
        return None
    mx = (n - 1) / 2
    my = sum(scores) / n
    num = sum((i - mx) * (y - my) for i, y in enumerate(scores))
    den = sum((i - mx) ** 2 for i in range(n))
    return round(num / den, 4)
