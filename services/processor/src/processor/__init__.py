"""event-tracker processor: consume, bulk write, ack."""
