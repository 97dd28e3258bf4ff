"""HTTP plumbing: request ids, access log, body guards, the error envelope, HTTP metrics."""
