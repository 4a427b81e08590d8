"""Logging, counters and statistics."""
