"""Outreach configuration per routing group, from settings and a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxstream.agents.outreach import OutreachConfigError, config_from
from cxstream.streams.settings import Settings


def test_settings_make_the_default_and_the_file_overrides_per_group(tmp_path: Path) -> None:
    f = tmp_path / "outreach.toml"
    f.write_text('[default]\ncap_max = 2\n\n[groups.vip]\nchurn_threshold = 0.4\nquiet_start = "22:00"\n')
    s = Settings.from_env({"CX_OUTREACH_CHURN_THRESHOLD": "0.7", "CX_OUTREACH_HOLDOUT": "0.1", "CX_OUTREACH_CONFIG_FILE": str(f)})
    cfg = config_from(s)
    assert (cfg.default.churn_threshold, cfg.default.cap_max, cfg.default.holdout_fraction) == (0.7, 2, 0.1)
    vip = cfg.for_group("vip")
    assert (vip.churn_threshold, vip.quiet_start, vip.holdout_fraction) == (0.4, "22:00", 0.1)
    assert cfg.for_group("elsewhere") is cfg.default


def test_a_bad_file_says_what_is_wrong(tmp_path: Path) -> None:
    f = tmp_path / "outreach.json"
    f.write_text('{"groups": {"vip": {"cap_max": "lots"}}}')
    with pytest.raises(OutreachConfigError, match="cap_max"):
        config_from(Settings.from_env({"CX_OUTREACH_CONFIG_FILE": str(f)}))
