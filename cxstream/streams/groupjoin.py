"""One protocol list in every JoinGroup: a fix of aiokafka's join for a consumer offering more than one assignor.

aiokafka 0.14 sends one JoinGroup request per assignor it is given (its join loop sits inside the
loop over the assignors; aio-libs/aiokafka pull request 1168, open): the first request offers the
first protocol only, the next the first two, and so on, and the member takes the last answer.  The
stages offer two (``cx-roundrobin``, then plain ``roundrobin``: :mod:`cxstream.streams.assignor`).

The group coordinator keeps what each member offered.  A member that joins again offering
something else is "updating its metadata", and that starts a new rebalance.  So every join of a
stages consumer started another rebalance at once, and with two workers joining together the two
could keep it up for ever, each one's second request ending the generation the other had just
joined (the broker's log: "Preparing to rebalance ... reason: Updating metadata for member ...",
the two members by turns; generation 1,000 passed within 180 s, the workers never ready).

:class:`OneListRebalance` makes every JoinGroup request of a join offer the whole list.  The
repeats are then the same request again, which the coordinator answers with the generation under
way (a member rejoining with the same metadata, as after a lost answer) without a new rebalance.
:func:`install` puts it in aiokafka's place; a consumer with one assignor joins exactly as before,
and a release of aiokafka that sends one request per join is left as it is (its request already
offers the whole list).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka.consumer import group_coordinator
from aiokafka.protocol.group import JoinGroupRequest


def offered(assignors: Iterable[Any], topics: Iterable[str]) -> list[tuple[str, bytes]]:
    """Each assignor's ``(protocol name, metadata)`` for *topics*, in preference order, as a JoinGroup offers them."""
    protocols = []
    for assignor in assignors:
        metadata = assignor.metadata(topics)
        protocols.append((assignor.name, metadata if isinstance(metadata, bytes) else metadata.encode()))
    return protocols


def complete(request: Any, protocols: Sequence[tuple[str, bytes]]) -> None:
    """Make the JoinGroup *request* offer exactly *protocols* if it offers their first one, or their first few.

    Every request of one join then carries the same bytes, whatever order the assignors list the
    topics in from one call to the next.

    >>> r = JoinGroupRequest("g", 10000, 10000, "", None, "consumer", [("a", b"1")])
    >>> complete(r, [("a", b"1"), ("b", b"2")]); r._group_protocols
    [('a', b'1'), ('b', b'2')]
    >>> complete(r, [("a", b"1"), ("b", b"2")]); r._group_protocols  # already whole: the same list
    [('a', b'1'), ('b', b'2')]
    >>> other = JoinGroupRequest("g", 10000, 10000, "", None, "consumer", [("c", b"3")])
    >>> complete(other, [("a", b"1"), ("b", b"2")]); other._group_protocols  # not these protocols: left alone
    [('c', b'3')]
    """
    if not isinstance(request, JoinGroupRequest):
        return
    names = [name for name, _ in request._group_protocols]
    if names and names == [name for name, _ in protocols[: len(names)]]:
        request._group_protocols = list(protocols)


class OneListRebalance(group_coordinator.CoordinatorGroupRebalance):  # type: ignore[misc]
    """aiokafka's rebalance, each of whose JoinGroup requests offers every assignor's protocol."""

    async def perform_group_join(self) -> Any:
        if len(self._assignors) < 2:
            return await super().perform_group_join()
        protocols = offered(self._assignors, self._subscription.topics)
        coordinator = self._coordinator
        send = coordinator._send_req

        async def send_req(request: Any) -> Any:
            complete(request, protocols)
            return await send(request)

        coordinator._send_req = send_req  # this join's requests only (heartbeats and commits pass untouched)
        try:
            return await super().perform_group_join()
        finally:
            del coordinator._send_req


def install() -> None:
    """Make every aiokafka group consumer of this process join with :class:`OneListRebalance` (idempotent)."""
    group_coordinator.CoordinatorGroupRebalance = OneListRebalance
