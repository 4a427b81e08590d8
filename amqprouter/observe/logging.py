"""structlog set-up: key=value lines on stderr at the amqpprox verbosity scale."""

from __future__ import annotations

import logging
import sys
from typing import Final

import structlog

#: amqpprox's scale: 0 FATAL, 1 ERROR, 2 WARN, 3 INFO, 4 DEBUG, 5 TRACE.
VERBOSITY_LEVELS: Final = (
    logging.CRITICAL,
    logging.ERROR,
    logging.WARNING,
    logging.INFO,
    logging.DEBUG,
    logging.DEBUG - 5,
)
MAX_VERBOSITY: Final = len(VERBOSITY_LEVELS) - 1


def configure(verbosity: int) -> None:
    """Send log events at or above ``verbosity`` to stderr, one key=value line each."""
    level = VERBOSITY_LEVELS[verbosity]
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(
                key_order=["timestamp", "level", "event", "session"], drop_missing=True
            ),
        ],
        # Filtering in the bound logger makes a disabled level cost one method call.
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
