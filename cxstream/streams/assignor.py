"""The stages' partition assignor: aiokafka's round robin, and what each worker tells the group of itself.

A worker's identity fast path (``CX_IDENTITY_FAST_PATH``, :mod:`cxstream.agents.fastpath`) decides
whether another worker's context stage may take records locally: a worker that runs it on every
worker (``1``, mode ``always``) sends fast events that must be read from the log, in order with
identity's outputs, by whichever worker's context stage owns their partition.  So each worker puts
its mode in its group membership (the subscription's user data, sent with every join), and the
group's leader, which makes the assignment, sends every member the set of modes it saw (the
assignment's user data).  A worker whose group has a member in mode ``always`` hands records to
its context stage locally only while it is alone (:attr:`cxstream.streams.batch.BatchRuntime.fast_elsewhere`).
That makes any mix of modes in one group safe, a rolling upgrade from one to another included.

The protocol is named ``cx-roundrobin``; every worker offers aiokafka's plain ``roundrobin`` after
it, so a group with workers of an engine from before this assignor still forms.  The coordinator
then picks ``roundrobin``, the members learn nothing of each other, and a worker takes the safe
side (as if a member ran ``always``) until the group agrees on ``cx-roundrobin`` again; a worker
that runs ``always`` itself meanwhile sends nothing fast unless it is alone (:func:`group_told`),
since the old workers' context stages may hand records over locally.  (aiokafka on its own sends
one JoinGroup request per protocol offered, each a new rebalance: :mod:`cxstream.streams.groupjoin`
makes every request offer both.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import msgspec
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # a member that said nothing of itself (not a cx-roundrobin member, or unreadable user data)


class _Member(msgspec.Struct, kw_only=True):
    """A member's user data in its subscription."""

    fast_path: str = UNKNOWN


class _Group(msgspec.Struct, kw_only=True):
    """The user data of every member's assignment: the modes the leader saw in the group."""

    fast_paths: list[str] = []


def _decode(raw: bytes | None, kind: type[msgspec.Struct]) -> msgspec.Struct | None:
    try:
        return msgspec.json.decode(raw, type=kind) if raw else None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class GroupAssignor(RoundRobinPartitionAssignor):
    """aiokafka's round robin, with each member's identity fast path mode passed round the group.

    One instance per worker (*fast_path*: its ``Settings.identity_fast_path_mode``).  After each
    assignment of this protocol :meth:`take` gives the modes of the whole group, once.

    >>> from aiokafka.coordinator.protocol import ConsumerProtocol
    >>> a, b = GroupAssignor("alone"), GroupAssignor("always")
    >>> members = {"m1": ConsumerProtocol.METADATA.decode(a.metadata(["t"]).encode()),
    ...            "m2": ConsumerProtocol.METADATA.decode(b.metadata(["t"]).encode())}
    >>> class Cluster:
    ...     def partitions_for_topic(self, topic): return {0, 1}
    >>> out = a.assign(Cluster(), members)
    >>> out["m1"].assignment, out["m2"].assignment  # as aiokafka's own round robin
    ([('t', [0])], [('t', [1])])
    >>> b.on_assignment(out["m2"]); sorted(b.take())
    ['alone', 'always']
    >>> b.take() is None  # each assignment's modes are taken once
    True
    """

    name = "cx-roundrobin"
    version = 0

    def __init__(self, fast_path: str) -> None:
        self.fast_path = fast_path
        self._modes: frozenset[str] | None = None

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:  # type: ignore[override]
        return ConsumerProtocolMemberMetadata(self.version, list(topics), msgspec.json.encode(_Member(fast_path=self.fast_path)))

    def assign(  # type: ignore[override]
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        modes = set()
        for member in members.values():
            said = _decode(member.user_data, _Member)
            modes.add(said.fast_path if isinstance(said, _Member) else UNKNOWN)
        if len(modes) > 1:
            log.info("stages: the group's members run the identity fast path as %s", ", ".join(sorted(modes)))
        group = msgspec.json.encode(_Group(fast_paths=sorted(modes)))
        return {
            member_id: ConsumerProtocolMemberAssignment(a.version, a.assignment, group)
            for member_id, a in RoundRobinPartitionAssignor.assign(cluster, members).items()
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:  # type: ignore[override]
        group = _decode(assignment.user_data, _Group)
        self._modes = frozenset(group.fast_paths) if isinstance(group, _Group) and group.fast_paths else frozenset({UNKNOWN})

    def take(self) -> frozenset[str] | None:
        """The modes of the group's members as of the last assignment of this protocol, once (None: none since)."""
        modes, self._modes = self._modes, None
        return modes


def fast_elsewhere(modes: frozenset[str] | None) -> bool:
    """Whether a member of the group may send identity fast events to this worker's context stage's input.

    True when one runs the fast path on every worker, and on the safe side when the group did not
    say (*modes* None: the group assigned with plain ``roundrobin``) or a member did not.

    >>> fast_elsewhere(frozenset({"alone", "off"})), fast_elsewhere(frozenset({"alone", "always"}))
    (False, True)
    >>> fast_elsewhere(None), fast_elsewhere(frozenset({"alone", UNKNOWN}))
    (True, True)
    """
    return modes is None or "always" in modes or UNKNOWN in modes


def group_told(modes: frozenset[str] | None) -> bool:
    """Whether every member of the group said its mode: the assignment was of this protocol and no member was silent.

    A worker running the fast path on every worker (``1``) sends fast events while it is not alone
    only then: a member that did not say (an engine from before this assignor, whose context stage
    may hand identity's outputs over locally) could apply one ahead of such an event.

    >>> group_told(frozenset({"alone", "always"})), group_told(None), group_told(frozenset({"always", UNKNOWN}))
    (True, False, False)
    """
    return modes is not None and UNKNOWN not in modes
