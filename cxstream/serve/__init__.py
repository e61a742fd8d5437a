"""The HTTP API: context lookup, health, metrics."""
