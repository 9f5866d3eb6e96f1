"""Worker-side code: the Celery app and its tasks, and the ``tagger`` command line."""
