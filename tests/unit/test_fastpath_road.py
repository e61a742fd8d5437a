"""The identity fast path's choice of road (cxstream/agents/fastpath.py), on a replica fed by the real resolver."""

from __future__ import annotations

from cxstream.agents.fastpath import FAST_HEADERS, Replica, Road, Way
from cxstream.context.resolver import Resolver
from cxstream.schemas import Identifiers, InteractionEvent, OutcomeEvent

T, P = "cx.interactions.v1", 0


def ev(n: int, at: float = 100.0, **ids: str) -> InteractionEvent:
    return InteractionEvent(event_id=f"e{n}", occurred_at=at, channel="chat", kind="message", customer=Identifiers(**ids))


class World:
    """The identity table (the one resolver's) and a replica that sees it only when told to (its changelog read)."""

    def __init__(self) -> None:
        self.table: dict[bytes, bytes] = {}
        self.resolver = Resolver(self.table)
        self.replica = Replica()
        self.replica.ready = True
        self.road = Road(self.replica)

    def resolve(self, e: InteractionEvent) -> str | None:
        return self.resolver.resolve(e.customer.present(), event_id=e.event_id, at=e.occurred_at).customer_id

    def sync(self) -> None:
        for k in [k for k in self.replica.store if k not in self.table]:
            self.replica.apply(k, None)
        for k, v in self.table.items():
            self.replica.apply(k, v)

    def open(self, assignment: int = 1) -> None:
        """Take the input partition with cx.resolve.v1 empty (its first event is slow: moved, given offset 0 and passed)."""
        self.acked(self.road.choose(T, P, assignment, ev(0, email="nobody@x.org"), False), 0)
        self.road.barrier(T, P, 0)
        self.road.advance(1)

    @staticmethod
    def acked(way: Way, offset: int) -> Way:
        """What the runtime does when the broker acknowledges the record at *offset*."""
        way.tracked.offset, way.tracked.acked = offset, True
        return way


def test_a_settled_event_takes_the_fast_road_to_its_owner() -> None:
    w = World()
    cid = w.resolve(ev(1, email="jane@x.org", phone="+447700900123"))
    w.sync()
    w.open()
    way = w.road.choose(T, P, 1, ev(2, email="jane@x.org"), False)
    assert (way.fast, way.owner) == (True, cid)
    assert way.tracked.via_broker and way.tracked.headers == FAST_HEADERS, "read from the log, marked as fast"
    both = w.road.choose(T, P, 1, ev(3, email="jane@x.org", phone="+447700900123"), False)
    assert both.fast and both.owner == cid


def test_what_needs_the_resolver_takes_the_slow_road_with_its_reason() -> None:
    w = World()
    a = w.resolve(ev(1, email="jane@x.org"))
    w.resolve(ev(2, phone="+447700900999"))
    w.sync()
    w.open()
    choose = w.road.choose
    assert choose(T, P, 1, ev(3, email="new@x.org"), False).reason == "unsettled"
    assert choose(T, P, 1, ev(4, email="jane@x.org", phone="+447700900999"), False).reason == "unsettled", "two owners"
    assert choose(T, P, 2, ev(5, phone="+447700900999"), True).reason == "refused"
    erase = OutcomeEvent(event_id="x1", occurred_at=200.0, kind="erasure_requested", customer=Identifiers(email="jane@x.org"))
    assert choose(T, 1, 1, erase, False).reason == "erasure"
    assert a is not None


def test_nothing_is_fast_before_the_replica_has_read_the_changelog_or_the_partition_passed_its_barrier() -> None:
    w = World()
    w.resolve(ev(1, email="jane@x.org"))
    w.sync()
    w.replica.ready = False
    w.acked(w.road.choose(T, P, 1, ev(2, email="jane@x.org"), False), 1)
    assert w.road.inputs[T, P].slow[0].sent.offset == 1
    w.replica.ready = True
    moved = w.road.choose(T, P, 1, ev(3, email="jane@x.org"), False)
    assert moved.reason == "moved", "barrier not read yet"
    w.acked(moved, 2)
    assert w.road.waiting() == [(T, P)]
    w.road.barrier(T, P, 10)  # cx.resolve.v1 held 10 records when the partition was taken
    w.road.advance(9)
    w.acked(w.road.choose(T, P, 1, ev(4, email="bob@x.org"), False), 9)  # (unsettled: bob is new)
    assert w.road.choose(T, P, 1, ev(5, email="jane@x.org"), False).reason == "moved", "the identity stage is not past them"
    w.road.advance(10)
    assert w.road.choose(T, P, 1, ev(6, email="jane@x.org"), False).reason == "pending", "its own slow event 5: no offset yet"
    w.road.inputs[T, P].slow.clear()
    w.road.inputs[T, P].owners.clear()
    w.road.inputs[T, P].ids.clear()
    assert w.road.choose(T, P, 1, ev(7, email="jane@x.org"), False).fast
    # taken anew in a later assignment (a rebalance): closed again until its new barrier passes
    w.acked(w.road.choose(T, P, 2, ev(8, email="jane@x.org"), False), 11)
    w.acked(w.road.choose(T, P, 2, ev(9, email="jane@x.org"), False), 12)
    w.road.barrier(T, P, 13)
    w.road.advance(12)
    assert w.road.choose(T, P, 2, ev(10, email="jane@x.org"), False).reason == "moved"
    w.road.inputs[T, P].slow[-1].sent.offset, w.road.inputs[T, P].slow[-1].sent.acked = 13, True
    w.road.advance(14)
    assert w.road.choose(T, P, 2, ev(11, email="jane@x.org"), False).fast


def test_a_road_for_a_lone_worker_sends_nothing_fast_beside_another_and_its_slow_events_stay_pending() -> None:
    """CX_IDENTITY_FAST_PATH=auto: slow while the worker is not alone; once alone (restored after a
    rebalance), a settled event still waits behind the slow events it sent meanwhile."""
    w = World()
    w.road = Road(w.replica, alone_only=True)
    jane = w.resolve(ev(1, email="jane@x.org"))
    w.sync()
    w.open()
    assert w.road.choose(T, P, 1, ev(2, email="jane@x.org"), False).fast, "alone: fast"
    beside = w.road.choose(T, P, 1, ev(3, email="jane@x.org"), False, alone=False)
    assert (beside.fast, beside.reason, beside.owner) == (False, "not_alone", None)
    w.acked(beside, 5)
    behind = w.road.choose(T, P, 1, ev(4, email="jane@x.org"), False)
    assert behind.reason == "pending", "alone again: behind event 3"
    w.acked(behind, 6)
    w.road.advance(7)
    again = w.road.choose(T, P, 1, ev(5, email="jane@x.org"), False)
    assert (again.fast, again.owner) == (True, jane)
    always = World()  # CX_IDENTITY_FAST_PATH=1
    always.resolve(ev(1, email="jane@x.org"))
    always.sync()
    always.open()
    assert always.road.choose(T, P, 1, ev(2, email="jane@x.org"), False, alone=False).fast, "'1': fast beside others"


def test_a_road_on_every_worker_sends_nothing_fast_beside_members_that_did_not_say_their_mode() -> None:
    """CX_IDENTITY_FAST_PATH=1 in a group that fell back to plain round robin (an engine from before
    the assignor beside it): slow while not alone, its slow events pending as ever; alone, or once
    every member said its mode, fast again behind them."""
    w = World()  # '1'
    jane = w.resolve(ev(1, email="jane@x.org"))
    w.sync()
    w.open()
    untold = w.road.choose(T, P, 1, ev(2, email="jane@x.org"), False, alone=False, told=False)
    assert (untold.fast, untold.reason, untold.owner) == (False, "modes_unknown", None)
    w.acked(untold, 5)
    behind = w.road.choose(T, P, 1, ev(3, email="jane@x.org"), False, alone=True, told=False)
    assert behind.reason == "pending", "alone: behind event 2"
    w.acked(behind, 6)
    w.road.advance(7)
    assert w.road.choose(T, P, 1, ev(4, email="jane@x.org"), False, alone=True, told=False).owner == jane, "alone: fast"
    assert w.road.choose(T, P, 1, ev(5, email="jane@x.org"), False, alone=False, told=True).fast, "every member said"


def test_an_event_waits_on_the_slow_road_behind_a_pending_one_of_the_same_customer() -> None:
    w = World()
    jane = w.resolve(ev(1, email="jane@x.org"))
    bob = w.resolve(ev(2, email="bob@x.org"))
    w.sync()
    w.open()
    choose = w.road.choose
    # jane's contact opens with a new phone: the resolver must link it (slow), and is given offset 41
    opened = choose(T, P, 1, ev(3, email="jane@x.org", phone="+447700900123"), False)
    assert not opened.fast
    w.acked(opened, 41)
    w.resolve(ev(3, email="jane@x.org", phone="+447700900123"))
    w.sync()  # the replica has seen the link before the identity stage's commit
    assert choose(T, P, 1, ev(4, email="jane@x.org"), False).reason == "pending", "same owner"
    assert choose(T, P, 1, ev(5, phone="+447700900123"), False).reason == "pending", "same identifier"
    assert choose(T, P, 1, ev(6, email="bob@x.org"), False).owner == bob, "another customer is not held"
    assert choose(T, 3, 1, ev(7, email="jane@x.org"), False).reason == "moved", "(another input partition: its own state)"
    w.road.advance(41)
    assert choose(T, P, 1, ev(8, email="jane@x.org"), False).reason == "pending", "committed 41: not past offset 41"
    w.road.advance(42)
    # ev 4 and 5 went slow too (offsets unknown here: not acknowledged yet), so jane is still held
    assert choose(T, P, 1, ev(9, email="jane@x.org"), False).reason == "pending"
    assert jane is not None


def test_the_pending_events_are_forgotten_once_the_identity_stage_committed_past_them() -> None:
    w = World()
    w.resolve(ev(1, email="jane@x.org"))
    w.sync()
    w.open()
    slow = [w.road.choose(T, P, 1, ev(n, email="jane@x.org", phone=f"+44770090{n:04d}"), False) for n in range(2, 5)]
    for offset, way in enumerate(slow, start=7):
        w.acked(way, offset)
    w.road.advance(9)  # past 7 and 8, not 9
    state = w.road.inputs[T, P]
    assert len(state.slow) == 1 and state.owners and not w.road.choose(T, P, 1, ev(9, email="jane@x.org"), False).fast
    w.road.advance(11)  # (the event just sent slow has no offset yet: it stays)
    assert [s.ids for s in state.slow] == [[("email", "jane@x.org")]] and sum(state.owners.values()) == 1
    state.slow[0].sent.offset, state.slow[0].sent.acked = 10, True
    w.road.advance(12)
    assert not state.slow and not state.ids and not state.owners
    assert w.road.choose(T, P, 1, ev(10, email="jane@x.org"), False).fast


def test_a_slow_event_is_produced_behind_the_unacknowledged_fast_events_of_its_customers() -> None:
    w = World()
    w.resolve(ev(1, email="jane@x.org"))
    w.resolve(ev(2, email="bob@x.org"))
    w.sync()
    w.open()
    f1 = w.road.choose(T, P, 1, ev(3, email="jane@x.org"), False)
    f2 = w.road.choose(T, P, 1, ev(4, email="bob@x.org"), False)
    assert f1.fast and f2.fast
    f2.tracked.acked = True
    merge = w.road.choose(T, P, 1, ev(5, email="jane@x.org", phone="+447700900123"), False)
    assert not merge.fast and merge.tracked.after == (f1.tracked,)
    both = w.road.choose(T, P, 1, ev(6, email="jane@x.org", account_number="A-1"), False)
    assert both.tracked.after == (f1.tracked,), "only the unacknowledged fast event of a customer it names"


def test_an_event_at_or_before_an_erasure_of_one_of_its_identifiers_is_not_fast() -> None:
    w = World()
    w.resolve(ev(1, email="jane@x.org"))
    w.resolver.erase({"email": "jane@x.org"}, request_id="x1", at=150.0)
    w.resolve(ev(2, at=160.0, email="jane@x.org"))  # she writes again: a new customer
    w.sync()
    w.open()
    late = w.road.choose(T, P, 1, ev(3, at=149.0, email="jane@x.org"), False)
    assert late.reason == "erased", "the resolver suppresses it; the fast road would give it to the new customer"
    w.acked(late, 5)
    w.road.advance(6)
    assert w.road.choose(T, P, 1, ev(4, at=170.0, email="jane@x.org"), False).fast


def test_a_slow_send_that_failed_is_not_pending_and_a_quarantined_value_settles_nobody() -> None:
    w = World()
    w.resolve(ev(1, email="jane@x.org", phone="+447700900123"))
    for n, cid in enumerate(["C-1", "C-2", "C-3", "C-4"], start=2):  # a switchboard number presented by four CRM customers
        w.resolver.resolve({"customer_id": cid, "phone": "+442079460000"}, event_id=f"s{n}", at=100.0 + n)
    w.sync()
    w.open()
    assert w.replica.owner("phone", "+442079460000") == "!shared"
    assert w.road.choose(T, P, 1, ev(7, phone="+442079460000"), False).reason == "unsettled"
    failed = w.road.choose(T, P, 1, ev(8, email="jane@x.org", phone="+447700900999"), False)
    failed.tracked.acked = True  # acknowledged with an error: no offset, nothing reached the identity stage
    w.road.inputs[T, P].slow[0].sent.offset, w.road.inputs[T, P].slow[0].sent.acked = 5, True  # (event 7's)
    w.road.advance(6)
    assert not w.road.inputs[T, P].slow and w.road.choose(T, P, 1, ev(9, email="jane@x.org"), False).fast
