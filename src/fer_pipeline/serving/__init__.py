"""Face detection plus classification, for batch inference and the HTTP API."""
