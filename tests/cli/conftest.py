"""The command tests reuse the fixtures of the layers their commands sit on (databases, models, stores)."""

from tests.api.conftest import api_db_url, db_url  # noqa: F401  (fixtures: a migrated Postgres per test)
from tests.shared.db.conftest import make_database  # noqa: F401
from tests.shared.labels.conftest import image_dir, write_manifest  # noqa: F401
from tests.shared.registry.conftest import make_model  # noqa: F401
from tests.workers.conftest import model_dir  # noqa: F401
