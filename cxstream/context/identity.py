"""Identifier normalisation and the canonical customer key (pure).

Phones become E.164 (``phonenumbers``), emails are lower-cased, handles trimmed
and lower-cased; junk values (empty, ``0``, ``-1``, ``null``, ``anonymous``,
repeated digits...) are refused so that they can never join two customers.
"""

from __future__ import annotations

import re

import phonenumbers

from cxstream.schemas import Identifiers

#: Order in which identifiers name a customer when the event has several.
PRECEDENCE = ("customer_id", "account_number", "email", "phone", "social_handle", "device_id")

_JUNK = frozenset(
    {"", "0", "-1", "null", "none", "nil", "n/a", "na", "undefined", "anonymous", "unknown", "test", "x", "guest",
     "nan", "false", "true", "[]", "{}", "?", "-", "--", "customer", "default", "unavailable", "not provided", "@"}
)
_REPEATED = re.compile(r"^(.)\1+$")
_SEQUENTIAL = frozenset({"0123456789", "1234567890", "123456789", "12345678", "9876543210", "987654321"})
#: Local parts and whole addresses that many unrelated people type or systems fill in.
_JUNK_EMAIL_LOCAL = frozenset(
    {"noreply", "no-reply", "donotreply", "do-not-reply", "none", "null", "test", "unknown", "anonymous", "noemail",
     "no-email", "nomail", "no", "na", "n/a", "example", "email", "customer", "guest", "nobody"}
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidIdentifier(ValueError):
    """An identifier value that cannot be normalised; the message says which and why."""


def is_junk(value: str) -> bool:
    """True for placeholder values that must never identify a customer.

    >>> [is_junk(v) for v in ["0", "NULL", "000000", "anonymous", "jane@x.org", "noreply@x.org", "1234567890"]]
    [True, True, True, True, False, True, True]
    """
    v = value.strip().lower()
    digits = re.sub(r"[\s()+.-]", "", v)
    if v in _JUNK or bool(_REPEATED.match(digits)) or digits in _SEQUENTIAL:
        return True
    if "@" in v:
        local, _, domain = v.partition("@")
        return local in _JUNK_EMAIL_LOCAL or domain in ("", "none.com", "noemail.com", "test.test")
    return False


def normalise(kind: str, value: str, default_region: str = "GB") -> str:
    """The normal form of one identifier, or :class:`InvalidIdentifier`.

    >>> normalise("email", " Jane.Doe@Example.COM ")
    'jane.doe@example.com'
    >>> normalise("phone", "+44 20 7946 0958")
    '+442079460958'
    >>> normalise("social_handle", " @JaneD ")
    '@janed'
    """
    v = value.strip()
    if is_junk(v):
        raise InvalidIdentifier(f"{kind}: {value!r} is a placeholder, not an identifier")
    if kind == "email":
        v = v.lower()
        if not _EMAIL.match(v):
            raise InvalidIdentifier(f"email: {value!r} is not an email address")
        return v
    if kind == "phone":
        try:
            num = phonenumbers.parse(v, default_region)
        except phonenumbers.NumberParseException as exc:
            raise InvalidIdentifier(f"phone: {value!r} is not a phone number ({exc})") from exc
        if not phonenumbers.is_possible_number(num):
            raise InvalidIdentifier(f"phone: {value!r} is not a possible phone number")
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    if kind == "social_handle":
        return v.lower()
    return v


def normalised(ids: Identifiers, default_region: str = "GB") -> dict[str, str]:
    """All identifiers of an event in normal form; junk ones raise :class:`InvalidIdentifier`."""
    return {k: normalise(k, v, default_region) for k, v in ids.present().items()}


def partition_identifiers(ids: Identifiers, default_region: str = "GB") -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """(usable identifiers in normal form, refused ones as kind -> (reason, detail)).

    The reason is ``blocked_value`` for placeholders and ``malformed`` for values
    that are not what their kind says; the detail never quotes the value.

    >>> ok, bad = partition_identifiers(Identifiers(email="Jane@X.org", phone="000000", social_handle="@j"))
    >>> ok, bad
    ({'email': 'jane@x.org', 'social_handle': '@j'}, {'phone': ('blocked_value', 'phone: a placeholder value')})
    """
    ok: dict[str, str] = {}
    bad: dict[str, tuple[str, str]] = {}
    for kind, value in ids.present().items():
        if is_junk(value):
            bad[kind] = ("blocked_value", f"{kind}: a placeholder value")
            continue
        try:
            ok[kind] = normalise(kind, value, default_region)
        except InvalidIdentifier as exc:
            detail = str(exc).split(":", 1)[1].replace(repr(value), "the value").strip() if ":" in str(exc) else ""
            bad[kind] = ("malformed", f"{kind}: {detail.split(' (')[0]}")
    return ok, bad


def customer_key(ids: dict[str, str]) -> str | None:
    """The key of the customer an event belongs to, from its normalised identifiers.

    A CRM customer id is used as is; otherwise the first identifier by
    :data:`PRECEDENCE`, prefixed with its kind.

    >>> customer_key({"email": "a@b.co", "phone": "+442079460958"})
    'email:a@b.co'
    >>> customer_key({"customer_id": "C-1", "email": "a@b.co"})
    'C-1'
    >>> customer_key({}) is None
    True
    """
    for kind in PRECEDENCE:
        if kind in ids:
            return ids[kind] if kind == "customer_id" else f"{kind}:{ids[kind]}"
    return None
