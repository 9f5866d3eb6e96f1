"""The model library: arrays and plain data in, plain data out (no database, Celery or HTTP here)."""
