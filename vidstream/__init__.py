"""vidstream: videos in, subtitled videos out, at scale."""

__version__ = "0.1.0"
