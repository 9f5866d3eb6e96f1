"""The database layer: declarative base, models, engine/session handling, query helpers, migrations."""
