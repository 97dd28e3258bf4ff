"""Fit the connection cap to the process's open-file limit (RLIMIT_NOFILE).

Each connection holds a file descriptor. A process at its limit fails `accept()` (EMFILE)
and the event loop stops accepting for a while, so the cap must be reached first. At
start-up the soft limit is raised towards the hard one as far as the cap needs; if even
the hard limit cannot hold the cap, the cap is lowered, with a warning. Worker processes
inherit the raised limit.
"""

import logging
import resource

logger = logging.getLogger(__name__)

# Descriptors kept for everything but client connections: the listening socket, RabbitMQ,
# Redis and MongoDB pools, the event loop's own, standard streams, files opened by libraries.
RESERVED_DESCRIPTORS = 256


def fit_connection_cap(wanted: int, reserved: int = RESERVED_DESCRIPTORS) -> int:
    """The connection cap this process can hold, at most `wanted`; raise the soft limit."""
    needed = wanted + reserved
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        except (ValueError, OSError) as error:
            logger.warning(
                "could not raise the open-file limit",
                extra={"soft": soft, "wanted": raised, "error": str(error)},
            )
        else:
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    cap = max(soft - reserved, soft // 2, 1)  # a tiny limit is shared half and half
    logger.warning(
        "INGEST_MAX_CONNECTIONS lowered to fit the open-file limit",
        extra={"configured": wanted, "cap": cap, "open_file_limit": soft, "reserved": reserved},
    )
    return cap
