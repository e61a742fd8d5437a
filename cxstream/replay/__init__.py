"""Recordings, replay with latency measurement, the demo sample, dataset adapters."""
