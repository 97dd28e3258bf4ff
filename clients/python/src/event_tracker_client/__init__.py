"""event-tracker's Python client: track events without blocking; batched, retried, safe.

```python
from event_tracker_client import Client, ClientConfig

with Client(ClientConfig(base_url="http://localhost:8000")) as client:
    client.track("alice", "page_view", {"path": "/home"})
```

See the package README for the asyncio client, configuration and delivery guarantees.
"""

from event_tracker_client.async_client import AsyncClient
from event_tracker_client.config import ClientConfig
from event_tracker_client.delivery import DeliveryStats, Failure, FailureCallback
from event_tracker_client.sync_client import Client

__all__ = ["AsyncClient", "Client", "ClientConfig", "DeliveryStats", "Failure", "FailureCallback"]
