"""Types shared by every record of the wire contract.

Every record is a frozen ``msgspec.Struct``: typed, validated on decode, and
exportable as JSON Schema (``cxstream schemas export DIR``).  Records are never
mutated after they are received; derive a new one with ``msgspec.structs.replace``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

#: Version of the wire contract.  Topic names carry it too (``cx.interactions.v1``).
SCHEMA_VERSION = 1

Channel = Literal["voice", "chat", "email", "sms", "web", "social", "app"]
CHANNELS: tuple[str, ...] = ("voice", "chat", "email", "sms", "web", "social", "app")

#: An identifier of an event, chosen by its producer; duplicates are dropped by ``event_id``.
EventId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        description="Unique id chosen by the producer; a second event with the same id is a duplicate and is dropped.",
    ),
]
#: Event time: seconds since the Unix epoch (UTC), stamped at the source.
EventTime = Annotated[
    float,
    msgspec.Meta(
        ge=0,
        le=32503680000,  # year 3000: anything later is a unit mistake (ms instead of s)
        description="When it happened at the source, in seconds since the Unix epoch (UTC). Not milliseconds.",
    ),
]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Language = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        max_length=35,
        description="BCP 47 language tag, e.g. 'en' or 'en-GB'.",
    ),
]
RoutingGroup = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The routing group (site or tenant) whose router handles this.",
    ),
]
Attributes = Annotated[
    dict[str, str | int | float | bool],
    msgspec.Meta(max_length=64, description="Free-form scalar attributes from the source system (at most 64 keys)."),
]


class Record(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False, omit_defaults=True):
    """Base of every wire record: frozen, keyword-only, unknown fields ignored.

    Unknown fields are ignored so that a producer on a newer minor revision of a
    schema does not break an older engine; removing or retyping a field needs a
    new topic version.
    """


class Identifiers(Record, frozen=True):
    """Whatever identifies the customer on the channel that saw them.

    At least one is needed to attach the event to a customer; an event with none
    still updates anonymous web/session context keyed by ``device_id`` if given.
    """

    customer_id: Annotated[str, msgspec.Meta(max_length=128, description="Canonical id in the business's CRM, if the channel knows it.")] | None = None
    email: Annotated[str, msgspec.Meta(max_length=254, description="Email address; lower-cased when resolved.")] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=40, description="Phone number in any notation; normalised to E.164.")] | None = None
    device_id: Annotated[str, msgspec.Meta(max_length=128, description="Web or app device/cookie id.")] | None = None
    social_handle: Annotated[str, msgspec.Meta(max_length=128, description="Handle on a social network, e.g. '@jane'.")] | None = None
    account_number: Annotated[str, msgspec.Meta(max_length=64, description="Account or contract number.")] | None = None

    def present(self) -> dict[str, str]:
        """The identifiers that are set, by kind.

        >>> Identifiers(email="a@b.c", phone=None).present()
        {'email': 'a@b.c'}
        """
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f))}
