"""The Redis key layout, shared by the writers (context and identity agents) and the reader (HTTP API).

| key                          | value                                   | written by |
|------------------------------|-----------------------------------------|------------|
| ``cx:ctx:{customer}``        | the context JSON, zstd-compressed       | context    |
| ``cx:id:{kind}:{value}``     | canonical customer id (``!shared``: quarantined value) | identity |
| ``cx:alias:{old id}``        | canonical id a merged customer now lives under | identity |
| ``cx:erasure:{request id}``  | hash: parts, done, requested_at, completed_at | API, identity, context |
| ``cx:queues:{routing group}``| live queue statistics JSON              | router     |

Identifier values appear in ``cx:id:`` keys in normal form (lower-cased email,
E.164 phone); erasure deletes them.  Every key has a TTL (``CX_REDIS_TTL_S``).
"""

from __future__ import annotations

#: Value of an identifier index key whose value is shared by too many customers.
SHARED = "!shared"


def context_key(customer_id: str) -> str:
    """The Redis key of a customer's context copy.

    >>> context_key("C-1")
    'cx:ctx:C-1'
    """
    return f"cx:ctx:{customer_id}"


def identifier_key(kind: str, value: str) -> str:
    """The Redis key that maps a normalised identifier to its canonical customer id.

    >>> identifier_key("email", "jane@x.org")
    'cx:id:email:jane@x.org'
    """
    return f"cx:id:{kind}:{value}"


def alias_key(customer_id: str) -> str:
    """The Redis key that maps a merged-away customer id to the id it now lives under.

    >>> alias_key("cust-1")
    'cx:alias:cust-1'
    """
    return f"cx:alias:{customer_id}"


def index_key(kind: str, value: str) -> str:
    """:func:`alias_key` for kind ``alias``, else :func:`identifier_key`."""
    return alias_key(value) if kind == "alias" else identifier_key(kind, value)


def erasure_key(request_id: str) -> str:
    """The Redis hash with an erasure request's progress.

    >>> erasure_key("erase-1")
    'cx:erasure:erase-1'
    """
    return f"cx:erasure:{request_id}"


def queues_key(routing_group: str) -> str:
    """The Redis key of a routing group's live queue statistics.

    >>> queues_key("default")
    'cx:queues:default'
    """
    return f"cx:queues:{routing_group}"


QUEUES_PATTERN = "cx:queues:*"
