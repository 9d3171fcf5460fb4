"""HTTP endpoints, one module per domain; thin: parse, call the service function, shape the answer."""
