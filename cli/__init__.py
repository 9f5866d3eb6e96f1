"""The ``tagger`` command line: thin typer commands over the library (``shared/``), the workers and the API.

The only package that imports typer; it sits on top of ``shared/``, ``workers/`` and ``api/`` and
nothing imports it back.
"""
