"""Pure routing core: roster, queues, eligibility, ordering, SLA escalation, offers, statistics.

No I/O and no clock of its own: a :class:`Router` is a deterministic function of its
input stream (see ``docs/ROUTING.md``).

>>> from cxstream.schemas import AdvisorEvent, ContactRequest
>>> r = Router(group="default", config=RoutingConfig())
>>> r.apply(AdvisorEvent(event_id="e1", occurred_at=100.0, advisor_id="ann", kind="login"))
[]
>>> [o.advisor_id for o in r.apply(ContactRequest(event_id="e2", contact_id="c1", customer_id="u1",
...     routing_group="default", channel="voice", opened_at=101.0))]
['ann']
"""

from cxstream.routing.config import POLICIES, RoutingConfig, Weights
from cxstream.routing.router import Output, Router, RouterState

__all__ = ["POLICIES", "Output", "Router", "RouterState", "RoutingConfig", "Weights"]
