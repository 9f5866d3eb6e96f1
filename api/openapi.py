"""The OpenAPI document: what FastAPI generates, plus the models routes name only by ``$ref``.

``POST /v1/events`` reads its raw body (to enforce the byte limit while streaming), so FastAPI sees no
body parameter; the route describes its body in ``openapi_extra`` with :func:`ref`, and :func:`install`
adds the referenced models to ``components/schemas``. The checked-in copy is ``docs/openapi.json``,
written by ``tagger api openapi`` (cli/api.py) from :func:`api.app.openapi_document` and kept in
sync by tests/api/test_openapi.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import BaseModel

REF_PREFIX = "#/components/schemas/"

_referenced: dict[str, type[BaseModel]] = {}  # models named by openapi_extra, added by install()


def ref(model: type[BaseModel]) -> dict[str, str]:
    """``{"$ref": ...}`` to ``model`` in components/schemas; the model is added there by :func:`install`."""
    name = model.__name__
    known = _referenced.setdefault(name, model)
    if known is not model:
        raise ValueError(f"two models named {name} in the OpenAPI document: {known!r} and {model!r}")
    return {"$ref": f"{REF_PREFIX}{name}"}


def component_schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    """Each model's JSON schema by name, its ``$defs`` lifted to the same level (refs point there)."""
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF_PREFIX + "{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the models referenced with :func:`ref` (once; FastAPI caches it)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        spec = generate()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in component_schemas(list(_referenced.values())).items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"components/schemas/{name} is generated twice, differently")
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def render(spec: dict[str, Any]) -> str:
    """Deterministic text (sorted keys, indent 2, trailing newline), so a diff shows only real changes."""
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
