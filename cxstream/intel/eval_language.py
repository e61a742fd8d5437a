"""``cxstream eval language``: accuracy and cost of message language detection on a multilingual sample.

The sample ships inside a package from PyPI, so nothing is downloaded at run time: **Django's
message catalogues** (the ``django`` wheel, a ``dev`` dependency; BSD-3-Clause), i.e. the
``locale/<lang>/LC_MESSAGES/django.po`` files of ``django/conf`` and ``django/contrib/*``.  Each
holds Django's English user-facing messages (``msgid``: the English sample) and their human
translations by Django's translation teams (``msgstr``), e.g. "Enter a valid email address." /
"Saisissez une adresse de courriel valide.".  They are short, polite, service-like sentences,
the same content in every language (so languages are compared on equal text), shorter and more
formal than customer chat.  Placeholders (``%(name)s``, ``{0}``), HTML tags and fuzzy entries are
dropped; a text needs at least two words; duplicates within a language are dropped.

Real customer messages as well: the customers' turns of the IBM Twitter customer-care conversations
(``twitter_customer_care_ibm/dev.json`` under ``CX_SHARED_DATA_DIR``; English-language brand accounts,
no language labels): what share the detector calls English, another language or "unknown" (a message
it does not call English loses its sentiment), and the cost on real chat text.

Reported per detector: ``py3langid`` (the engine's default) and ``lingua`` in its high- and low-accuracy modes: accuracy per language and per
length (words), coverage (share not ``"unknown"``) and accuracy at several minimum confidences,
the confusion matrix at the configured one, how texts in languages *outside* the configured set
come out (ideally ``"unknown"``), and the cost: µs per message (median and p99 of single calls,
and the mean over the whole sample), and the time to build the detector (models preloaded).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxstream.context.language import UNKNOWN, LanguageDetector, parse_languages
from cxstream.intel.evaluate import emit

#: The languages the engine detects by default (``CX_LANGUAGES``).
DEFAULT_LANGUAGES = "en,fr,de,es,it,nl,pt"
#: The detectors compared: (backend, lingua's low-accuracy mode); the first is the engine's default.
DETECTORS: tuple[tuple[str, bool], ...] = (("py3langid", False), ("lingua", False), ("lingua", True))
#: Languages outside that set, to see what becomes of a message in a language nobody configured.
OUTSIDE = ("pl", "sv", "tr", "ro", "cs", "da")
THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)

_PLACEHOLDER = re.compile(r"%\([^)]*\)[sdif]|%[sdif]|\{[^}]*\}|<[^>]+>|&[a-z]+;")
_WORD = re.compile(r"[^\W\d_]+")


def _unquote(line: str) -> str:
    s = line.strip()
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        s = s[1:-1]
    return s.replace('\\"', '"').replace("\\n", " ").replace("\\t", " ").replace("\\\\", "\\")


def parse_po(text: str) -> list[tuple[str, str]]:
    """``(msgid, msgstr)`` pairs of a gettext catalogue: singular form (``msgstr[0]`` of plurals),
    fuzzy and untranslated entries and the header left out.

    >>> po = 'msgid ""\\nmsgstr "Header"\\n\\n#, fuzzy\\nmsgid "Old"\\nmsgstr "Vieux"\\n\\n' \\
    ...      'msgid "Yes"\\nmsgstr "Oui"\\n\\nmsgid "one item"\\nmsgid_plural "%d items"\\n' \\
    ...      'msgstr[0] "un élément"\\nmsgstr[1] "%d éléments"\\n\\nmsgid "Long "\\n"text"\\nmsgstr ""\\n"Long "\\n"texte"\\n'
    >>> parse_po(po)
    [('Yes', 'Oui'), ('one item', 'un élément'), ('Long text', 'Long texte')]
    """
    out: list[tuple[str, str]] = []
    for block in re.split(r"\n\s*\n", text):
        fuzzy = False
        field: str | None = None
        parts: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            if line.startswith("#"):
                continue
            m = re.match(r"(msgctxt|msgid_plural|msgid|msgstr\[0\]|msgstr\[\d+\]|msgstr)\s+(\".*\")\s*$", line)
            if m:
                field = m.group(1)
                parts[field] = parts.get(field, "") + _unquote(m.group(2))
            elif line.strip().startswith('"') and field is not None:
                parts[field] += _unquote(line)
        msgid = parts.get("msgid", "")
        msgstr = parts.get("msgstr", parts.get("msgstr[0]", ""))
        if msgid and msgstr and not fuzzy:
            out.append((msgid, msgstr))
    return out


def clean(text: str) -> str:
    """A catalogue message as plain text: placeholders and tags out, spaces collapsed.

    >>> clean("Ensure this value has at most %(limit_value)d characters (it has %(show_value)d).")
    'Ensure this value has at most characters (it has).'
    """
    return re.sub(r"\s+", " ", _PLACEHOLDER.sub(" ", text)).replace(" .", ".").replace(" )", ")").strip()


def django_root() -> Path:
    """Where the installed ``django`` package is (its catalogues are the sample)."""
    spec = importlib.util.find_spec("django")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the 'django' package is not installed: pip install -e '.[dev]' (its catalogues are the sample)")
    return Path(spec.origin).parent


def django_sample(languages: Iterable[str], root: Path | None = None, min_words: int = 2) -> list[tuple[str, str]]:
    """``(text, language)`` rows from Django's catalogues for *languages* (English from the msgids)."""
    root = root or django_root()
    catalogues = sorted(root.glob("**/locale/*/LC_MESSAGES/django.po"))
    want = list(dict.fromkeys(languages))
    seen: dict[str, set[str]] = {lang: set() for lang in want}
    rows: list[tuple[str, str]] = []

    def keep(text: str, lang: str) -> None:
        t = clean(text)
        if len(_WORD.findall(t)) >= min_words and t not in seen[lang]:
            seen[lang].add(t)
            rows.append((t, lang))

    for path in catalogues:
        lang = path.parent.parent.name  # .../locale/<lang>/LC_MESSAGES/django.po
        if lang == "fr" and "en" in seen:
            for msgid, _ in parse_po(path.read_text(encoding="utf-8")):
                keep(msgid, "en")
        if lang in seen and lang != "en":
            for _, msgstr in parse_po(path.read_text(encoding="utf-8")):
                keep(msgstr, lang)
    return rows


def _length_bucket(text: str) -> str:
    n = len(_WORD.findall(text))
    return "2-3 words" if n <= 3 else "4-7 words" if n <= 7 else "8+ words"


def _cost(detector: LanguageDetector, texts: Sequence[str]) -> dict[str, float]:
    singles: list[float] = []
    for t in texts[:500]:
        t0 = time.perf_counter()
        detector.detect(t)
        singles.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for t in texts:
        detector.detect(t)
    whole = time.perf_counter() - t0
    return {
        "us_per_message_mean": round(whole / max(1, len(texts)) * 1e6, 1),
        "us_per_message_p50": round(float(np.percentile(singles, 50)) * 1e6, 1) if singles else 0.0,
        "us_per_message_p99": round(float(np.percentile(singles, 99)) * 1e6, 1) if singles else 0.0,
    }


def _detectors(languages: Sequence[str]) -> list[LanguageDetector]:
    return [LanguageDetector(languages, min_confidence=0.0, low_accuracy=low, backend=b) for b, low in DETECTORS]


def compare_cost(texts: Sequence[str], languages: Sequence[str], repeats: int = 3) -> dict[str, Any]:
    """µs per message of every detector, measured interleaved (text by text, detector by detector) and as
    the best of *repeats* calls per text: on a shared machine the least-disturbed figure, and every
    detector equally disturbed.  Median and p90 over the texts, and each median over the first's."""
    detectors = {d.name: d for d in _detectors(languages)}
    for d in detectors.values():  # lingua's low-accuracy mode loads its models on its first message
        d.detect("warm up the models before timing")
    best: dict[str, list[float]] = {name: [] for name in detectors}
    for t in texts:
        for name, d in detectors.items():
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                d.detect(t)
                runs.append(time.perf_counter() - t0)
            best[name].append(min(runs))
    out: dict[str, Any] = {"n": len(texts), "repeats": repeats}
    for name, xs in best.items():
        out[name] = {"us_p50": round(float(np.percentile(xs, 50)) * 1e6, 1), "us_p90": round(float(np.percentile(xs, 90)) * 1e6, 1)}
    first = next(iter(detectors))
    for name in detectors:
        out[name]["p50_over_default"] = round(out[name]["us_p50"] / out[first]["us_p50"], 2)
    return out


def evaluate_mode(
    rows: Sequence[tuple[str, str]], outside: Sequence[tuple[str, str]], languages: Sequence[str],
    min_confidence: float, low_accuracy: bool, backend: str = "py3langid",
) -> dict[str, Any]:
    """One detector (and mode) on the sample: accuracy, coverage per threshold, confusion, outside-set results, cost."""
    rss = _rss_mb()
    t0 = time.perf_counter()
    detector = LanguageDetector(languages, min_confidence=0.0, low_accuracy=low_accuracy, backend=backend)
    build_s = time.perf_counter() - t0
    rss_added = _rss_mb() - rss
    found = [detector.detect(t) for t, _ in rows]
    truth = [lang for _, lang in rows]

    def answer(d: Any, threshold: float) -> str:
        return d.language if d.language != UNKNOWN and d.confidence >= threshold else UNKNOWN

    at = [answer(d, min_confidence) for d in found]
    per_lang: dict[str, dict[str, Any]] = {}
    for lang in languages:
        idx = [i for i, t in enumerate(truth) if t == lang]
        per_lang[lang] = {
            "n": len(idx),
            "accuracy": round(sum(at[i] == lang for i in idx) / len(idx), 4) if idx else None,
            "unknown": round(sum(at[i] == UNKNOWN for i in idx) / len(idx), 4) if idx else None,
        }
    by_length: dict[str, dict[str, Any]] = {}
    for bucket in ("2-3 words", "4-7 words", "8+ words"):
        idx = [i for i, (t, _) in enumerate(rows) if _length_bucket(t) == bucket]
        by_length[bucket] = {"n": len(idx), "accuracy": round(sum(at[i] == truth[i] for i in idx) / len(idx), 4) if idx else None}
    thresholds = []
    for th in THRESHOLDS:
        ans = [answer(d, th) for d in found]
        answered = [i for i, a in enumerate(ans) if a != UNKNOWN]
        thresholds.append({
            "min_confidence": th,
            "accuracy": round(sum(ans[i] == truth[i] for i in range(len(ans))) / max(1, len(ans)), 4),
            "coverage": round(len(answered) / max(1, len(ans)), 4),
            "accuracy_answered": round(sum(ans[i] == truth[i] for i in answered) / len(answered), 4) if answered else None,
        })
    confusion: dict[str, dict[str, int]] = {lang: {} for lang in languages}  # truth -> detected -> count
    for t, a in zip(truth, at, strict=True):
        confusion[t][a] = confusion[t].get(a, 0) + 1
    out_found = [answer(detector.detect(t), min_confidence) for t, _ in outside]
    outside_by: dict[str, dict[str, int]] = {}
    for (_, lang), a in zip(outside, out_found, strict=True):
        outside_by.setdefault(lang, {})
        outside_by[lang][a] = outside_by[lang].get(a, 0) + 1
    return {
        "mode": detector.name,
        "min_confidence": min_confidence,
        "accuracy": round(sum(a == t for a, t in zip(at, truth, strict=True)) / max(1, len(rows)), 4),
        "coverage": round(sum(a != UNKNOWN for a in at) / max(1, len(rows)), 4),
        "per_language": per_lang,
        "by_length": by_length,
        "thresholds": thresholds,
        "confusion": {k: dict(sorted(v.items())) for k, v in confusion.items()},
        "outside_set": {
            "n": len(outside),
            "unknown": round(sum(a == UNKNOWN for a in out_found) / len(outside), 4) if outside else None,
            "by_language": outside_by,
        },
        "build_s": round(build_s, 3),
        "rss_mb_added_by_build": round(rss_added, 1),
        **_cost(detector, [t for t, _ in rows]),
    }


_HANDLE_OR_URL = re.compile(r"@\w+|https?://\S+")


def twitter_customer_texts(path: Path) -> list[str]:
    """The customers' turns of the Twitter customer-care conversations, redacted, without handles and links."""
    from cxstream.context.redact import redact

    out = []
    for conv in json.loads(path.read_text(encoding="utf-8")):
        for turn in conv.get("dialogContent") or []:
            if "client" in turn and turn.get("message"):
                text = re.sub(r"\s+", " ", _HANDLE_OR_URL.sub(" ", redact(turn["message"]))).strip()
                if text:
                    out.append(text)
    return out


def evaluate_chat(
    texts: Sequence[str], languages: Sequence[str], min_confidence: float, low_accuracy: bool, backend: str = "py3langid"
) -> dict[str, Any]:
    """What the detector makes of real (English) customer messages, and its cost on them."""
    detector = LanguageDetector(languages, min_confidence=min_confidence, low_accuracy=low_accuracy, backend=backend)
    found = [detector.detect(t).language for t in texts]
    counts: dict[str, int] = {}
    for lang in found:
        counts[lang] = counts.get(lang, 0) + 1
    n = max(1, len(texts))
    return {
        "mode": detector.name,
        "n": len(texts),
        "english": round(counts.get("en", 0) / n, 4),
        "unknown": round(counts.get(UNKNOWN, 0) / n, 4),
        "other_language": round(sum(v for k, v in counts.items() if k not in ("en", UNKNOWN)) / n, 4),
        "detected": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        **_cost(detector, texts),
    }


def evaluate_language(languages: Sequence[str], min_confidence: float, root: Path | None = None) -> dict[str, Any]:
    """Both modes on Django's catalogues for *languages* (and :data:`OUTSIDE` for the outside-set check)."""
    rows = django_sample(languages, root)
    outside_langs = [lang for lang in OUTSIDE if lang not in languages]
    outside = django_sample(outside_langs, root, min_words=4) if outside_langs else []
    if not rows:
        raise ValueError(f"no sample rows for {list(languages)} in Django's catalogues")
    import django

    return {
        "task": "language",
        "detectors": {"py3langid": _version("py3langid"), "lingua-language-detector": _version("lingua-language-detector")},
        "sample": f"django {django.__version__} message catalogues (locale/*/LC_MESSAGES/django.po; English = msgids)",
        "languages": list(languages),
        "n": len(rows),
        "n_per_language": {lang: sum(1 for _, x in rows if x == lang) for lang in languages},
        "modes": [evaluate_mode(rows, outside, languages, min_confidence, low, backend) for backend, low in DETECTORS],
        "cost_interleaved": compare_cost([t for t, _ in rows[::4]], languages),
    }


def _chat_part(languages: Sequence[str], min_confidence: float) -> dict[str, Any]:
    from cxstream.datasets import shared_data_dir

    path = shared_data_dir() / "twitter_customer_care_ibm/dev.json"
    if not path.exists():
        return {"skipped": f"no {path}"}
    texts = twitter_customer_texts(path)
    return {
        "file": str(path),
        "modes": [evaluate_chat(texts, languages, min_confidence, low, backend) for backend, low in DETECTORS],
        "cost_interleaved": compare_cost(texts, languages),
    }


def _rss_mb() -> float:
    try:
        import psutil
    except ImportError:  # a dev dependency
        return float("nan")
    return float(psutil.Process().memory_info().rss) / 2**20


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    """``cxstream eval language [--languages en,fr,...] [--min-confidence X] [--json OUT]``."""
    parser = argparse.ArgumentParser(prog="cxstream eval language", description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", default=DEFAULT_LANGUAGES, help="ISO 639-1 codes to detect among")
    parser.add_argument("--min-confidence", type=float, default=0.5, help="below it a message is 'unknown'")
    parser.add_argument("--json", dest="out", default="bench/results/intel-language.json", help="write the result JSON here")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        languages = parse_languages(args.languages)
        result = evaluate_language(languages, args.min_confidence)
        result["real_customer_messages"] = _chat_part(languages, args.min_confidence)
    except (OSError, ValueError) as exc:
        print(f"cxstream eval language: error: {exc}", file=sys.stderr)
        return 2
    emit(result, args.out, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
