"""The Redis key layout, shared by the writer (context agent) and the reader (HTTP API)."""

from __future__ import annotations


def context_key(customer_id: str) -> str:
    """The Redis key of a customer's context copy.

    >>> context_key("C-1")
    'cx:ctx:C-1'
    """
    return f"cx:ctx:{customer_id}"


def queues_key(routing_group: str) -> str:
    """The Redis key of a routing group's live queue statistics.

    >>> queues_key("default")
    'cx:queues:default'
    """
    return f"cx:queues:{routing_group}"


QUEUES_PATTERN = "cx:queues:*"
