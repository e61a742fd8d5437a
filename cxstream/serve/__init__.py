"""The HTTP API, served from processes of its own (``cxstream serve``): context lookup, erasure, queues, health, metrics.

``http`` (routes), ``queues`` (queue statistics routes), ``erasure`` (publishing erasure
requests), ``common`` (shared keys, errors, the engine heartbeat), ``main`` (the process),
``workers`` (how ``cxstream run`` starts, watches and stops those processes).
"""
