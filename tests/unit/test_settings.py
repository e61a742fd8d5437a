"""Settings come from CX_* variables or one TOML file, are validated, and are documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxstream.streams.settings import Settings, SettingsError


def test_defaults_mean_embedded_servers() -> None:
    s = Settings.from_env({})
    assert s.embedded_broker and s.embedded_redis and s.partitions == 4


def test_environment_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "cx.toml"
    f.write_text('partitions = 8\nbroker_url = "k:9092"\napi_keys = "a, b"\n')
    s = Settings.from_env({"CX_SETTINGS_FILE": str(f), "CX_PARTITIONS": "12"})
    assert (s.partitions, s.broker_url, s.embedded_broker) == (12, "k:9092", False)
    assert s.api_key_set == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "alone"),
        ({"CX_IDENTITY_FAST_PATH": "1"}, "always"),
        ({"CX_IDENTITY_FAST_PATH": "0"}, "off"),
        # where the fast path cannot run, 'auto' is off (and '1' refused, above)
        ({"CX_PROCESSING_GUARANTEE": "exactly_once"}, "off"),
        ({"CX_STAGE_CLIENT": "librdkafka"}, "off"),
        ({"CX_STAGE_RUNTIME": "faust"}, "off"),
    ],
)
def test_the_identity_fast_path_runs_while_alone_by_default_and_where_it_can(env: dict[str, str], mode: str) -> None:
    assert Settings.from_env(env).identity_fast_path_mode == mode


def test_a_settings_file_may_give_the_fast_path_as_a_number(tmp_path: Path) -> None:
    f = tmp_path / "cx.toml"
    f.write_text("identity_fast_path = 1\n")
    assert Settings.from_env({"CX_SETTINGS_FILE": str(f)}).identity_fast_path_mode == "always"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CX_PARTITIONS": "four"}, "CX_PARTITIONS='four' is not a valid int"),
        ({"CX_TICK_INTERVAL_S": "soon"}, "CX_TICK_INTERVAL_S"),
        ({"CX_SETTINGS_FILE": "/nonexistent/cx.toml"}, "CX_SETTINGS_FILE=/nonexistent/cx.toml"),
        ({"CX_STAGE_RUNTIME": "threads"}, "CX_STAGE_RUNTIME='threads': use 'batch' or 'faust'"),
        ({"CX_EVENT_LOOP": "trio"}, "CX_EVENT_LOOP='trio': use 'uvloop' or 'asyncio'"),
        ({"CX_EMBEDDED_BROKER_GC": "zgc"}, "CX_EMBEDDED_BROKER_GC='zgc': use 'g1' or 'shenandoah'"),
        ({"CX_STAGE_CLIENT": "kafka-python"}, "CX_STAGE_CLIENT='kafka-python': use 'aiokafka' or 'librdkafka'"),
        ({"CX_IDENTITY_FAST_PATH": "2"}, "CX_IDENTITY_FAST_PATH='2': use 'auto', '1' or '0'"),
        ({"CX_LEARNER_NICE": "20"}, "CX_LEARNER_NICE=20: use a niceness from 0 to 19"),
        ({"CX_LEARNER_NICE": "-5"}, "CX_LEARNER_NICE=-5: use a niceness from 0 to 19"),
        ({"CX_IDENTITY_FAST_PATH": "1", "CX_PROCESSING_GUARANTEE": "exactly_once"},
         "CX_IDENTITY_FAST_PATH=1 needs .*'exactly_once'"),
        ({"CX_IDENTITY_FAST_PATH": "1", "CX_STAGE_CLIENT": "librdkafka"}, "CX_IDENTITY_FAST_PATH=1 needs .*'librdkafka'"),
        ({"CX_STAGE_PRODUCER": "kafka-python"}, "CX_STAGE_PRODUCER='kafka-python': use 'aiokafka' or 'lean'"),
        ({"CX_STAGE_PRODUCER": "lean", "CX_PROCESSING_GUARANTEE": "exactly_once"}, "CX_STAGE_PRODUCER=lean needs .*'exactly_once'"),
        ({"CX_STAGE_PRODUCER": "lean", "CX_STAGE_CLIENT": "librdkafka"}, "CX_STAGE_PRODUCER=lean needs .*'librdkafka'"),
        ({"CX_STAGE_PRODUCER": "lean", "CX_KAFKA_SECURITY_PROTOCOL": "SSL", "CX_KAFKA_SSL_CAFILE": "/x"},
         "CX_STAGE_PRODUCER=lean needs .*'SSL'"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "cx.toml"
    f.write_text("partitons = 8\n")
    with pytest.raises(SettingsError, match="partitons"):
        Settings.from_env({"CX_SETTINGS_FILE": str(f)})


def test_every_setting_is_documented() -> None:
    docs = Settings.documented()
    assert all(name.startswith("CX_") and meaning for name, _, meaning in docs)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "cxstream settings" in readme
