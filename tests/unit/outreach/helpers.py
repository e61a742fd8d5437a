"""Shared builders for the outreach unit tests."""

from __future__ import annotations

from typing import Any

import msgspec

from cxstream.outreach import ContextView, OutreachConfig
from cxstream.outreach.view import ContactView

#: Monday 1 January 2024 12:00 UTC: noon in London, 07:00 in New York, 21:00 in Tokyo.
NOON_UTC = 1704110400.0
HOUR = 3600.0
DAY = 86400.0


def view(**kw: Any) -> ContextView:
    """A reachable customer in London (email consented, nothing open) unless overridden."""
    base: dict[str, Any] = {
        "customer_id": "c1",
        "preferred_channel": "email",
        "consent": {"email": True},
        "timezone": "Europe/London",
        "language": "en",
    }
    base.update(kw)
    return ContextView(**base)


def config(**kw: Any) -> OutreachConfig:
    """The default config with overrides."""
    return msgspec.structs.replace(OutreachConfig(), **kw)


def contact(cid: str, at: float, intent: str | None = "refund", resolved: bool | None = None) -> ContactView:
    return ContactView(contact_id=cid, opened_at=at, intent=intent, resolved=resolved, closed_at=at + 600)
