"""The HTTP API (FastAPI): ingest for sellers, reads, review, health. Never imports torch."""
