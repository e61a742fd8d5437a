"""Settings, the Faust app factory, the topic catalogue (read topics.py first), codecs, dead letters, metrics."""
