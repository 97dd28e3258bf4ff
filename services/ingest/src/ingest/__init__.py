"""event-tracker ingest service: validate, publish, answer 202."""
