"""Routing configuration per routing group, from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxstream.agents.router import RoutingConfigError, host_from
from cxstream.routing import Router
from cxstream.streams.settings import Settings


def test_groups_get_their_own_configuration_and_it_survives_a_restore(tmp_path: Path) -> None:
    f = tmp_path / "routing.toml"
    f.write_text(
        '[default]\npolicy = "default"\n\n[default.intent_skills]\nrefund = ["billing"]\n\n'
        '[groups.vip]\npolicy = "fifo"\n'
    )
    host = host_from(Settings.from_env({"CX_ROUTING_CONFIG_FILE": str(f)}))
    vip, other = host.get("vip", None), host.get("other", None)
    assert (vip.config.policy, other.config.policy) == ("fifo", "default")
    assert vip.config.intent_skills == {"refund": ["billing"]}, "groups inherit the default's fields"
    saved = Router(group="other").to_state()  # saved under the built-in defaults
    assert host.get("other", saved).config.intent_skills == {"refund": ["billing"]}


def test_a_bad_routing_file_says_what_is_wrong(tmp_path: Path) -> None:
    f = tmp_path / "routing.json"
    f.write_text('{"groups": {"vip": {"policy": 7}}}')
    with pytest.raises(RoutingConfigError, match="policy"):
        host_from(Settings.from_env({"CX_ROUTING_CONFIG_FILE": str(f)}))
