"""Faust agents, one stage per file: thin I/O around the pure cores (see cxstream/streams/topics.py)."""
