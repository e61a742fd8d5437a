"""bench/pipeline/profile_report.py reads a py-spy profile as py-spy writes it and as bench/results keeps it (gzipped)."""

from __future__ import annotations

import gzip
from pathlib import Path

from tests.scripts import load_script

profile_report = load_script("bench/pipeline/profile_report.py")

FOLDED = (
    "_run (asyncio/events.py:80);stage.<locals>.handle (cxstream/agents/context.py:492);compress_context (cxstream/streams/codecs.py:60) 30\n"
    "_run (asyncio/events.py:80);Fetcher._proc_fetch_request (aiokafka/consumer/fetcher.py:842) 10\n"
)


def test_a_gzipped_profile_reads_like_the_plain_one(tmp_path: Path) -> None:
    plain, packed = tmp_path / "p.folded", tmp_path / "p.folded.gz"
    plain.write_text(FOLDED)
    packed.write_bytes(gzip.compress(FOLDED.encode()))
    assert profile_report.parse(packed) == profile_report.parse(plain) and len(profile_report.parse(plain)) == 2
    text = profile_report.report(packed)
    assert text.splitlines()[0].endswith(": 40 samples")
    assert "75.0%  stage: context (handle)" in text and "25.0%  aiokafka consumer (fetch/decode)" in text
