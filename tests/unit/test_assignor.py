"""The stages' partition assignor (cxstream/streams/assignor.py): round robin, and each member's fast path passed round."""

from __future__ import annotations

from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocol, ConsumerProtocolMemberMetadata

from cxstream.streams.assignor import UNKNOWN, GroupAssignor, fast_elsewhere


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3} if topic == "cx.customer-events.v1" else {0}


TOPICS = ["cx.customer-events.v1", "cx.resolve.v1"]


def wire(metadata: ConsumerProtocolMemberMetadata) -> ConsumerProtocolMemberMetadata:
    """As the leader reads it from the JoinGroup response."""
    return ConsumerProtocol.METADATA.decode(metadata.encode())


def test_the_partitions_are_plain_round_robins_and_every_member_hears_every_mode() -> None:
    workers = {f"m{i}": GroupAssignor(mode) for i, mode in enumerate(["alone", "off", "alone"])}
    members = {m: wire(a.metadata(TOPICS)) for m, a in workers.items()}
    out = workers["m0"].assign(Cluster(), members)  # type: ignore[arg-type]
    plain = RoundRobinPartitionAssignor.assign(Cluster(), members)  # type: ignore[arg-type]
    assert {m: sorted(a.partitions()) for m, a in out.items()} == {m: sorted(a.partitions()) for m, a in plain.items()}
    for m, assignor in workers.items():
        assignor.on_assignment(ConsumerProtocol.ASSIGNMENT.decode(out[m].encode()))
        modes = assignor.take()
        assert modes == {"alone", "off"}
        assert not fast_elsewhere(modes), "no member runs the fast path on every worker: local hand-over as ever"


def test_a_member_on_every_worker_or_one_that_says_nothing_puts_everyone_on_the_log() -> None:
    leader = GroupAssignor("alone")
    silent = ConsumerProtocolMemberMetadata(0, TOPICS, b"")  # a worker of an engine from before: plain round robin's metadata
    garbled = ConsumerProtocolMemberMetadata(0, TOPICS, b"\xff not json")
    for other, expected in [(GroupAssignor("always").metadata(TOPICS), {"alone", "always"}),
                            (silent, {"alone", UNKNOWN}), (garbled, {"alone", UNKNOWN})]:
        out = leader.assign(Cluster(), {"a": wire(leader.metadata(TOPICS)), "b": wire(other)})  # type: ignore[arg-type]
        leader.on_assignment(ConsumerProtocol.ASSIGNMENT.decode(out["a"].encode()))
        modes = leader.take()
        assert modes == expected
        assert fast_elsewhere(modes)


def test_an_assignment_of_the_plain_protocol_tells_nothing_and_the_worker_takes_the_safe_side() -> None:
    a = GroupAssignor("alone")
    a.on_assignment(ConsumerProtocol.ASSIGNMENT.decode(
        RoundRobinPartitionAssignor.assign(Cluster(), {"a": wire(a.metadata(TOPICS))})["a"].encode()  # type: ignore[arg-type]
    ))
    assert a.take() == {UNKNOWN}, "an assignment without the modes (empty user data)"
    assert a.take() is None, "the group chose plain roundrobin: this assignor was not asked"
    assert fast_elsewhere(None)
