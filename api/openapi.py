"""The OpenAPI document: what FastAPI generates, plus the models routes name only by ``$ref``.

``POST /v1/events`` reads its raw body (to enforce the byte limit while streaming), so FastAPI sees no
body parameter; the route describes its body in ``openapi_extra`` with :func:`ref`, and :func:`install`
adds the referenced models to ``components/schemas``. The checked-in copy is ``docs/openapi.json``,
written by ``tagger api openapi`` and kept in sync by tests/api/test_openapi.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

if TYPE_CHECKING:  # the root ``tagger`` command imports this module: keep its start-up light
    from fastapi import FastAPI
    from pydantic import BaseModel

REF_PREFIX = "#/components/schemas/"
SPEC_PATH = Path("docs/openapi.json")
REGENERATE = "tagger api openapi"  # the command that rewrites docs/openapi.json

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


def build() -> dict[str, Any]:
    """The document of an app built with fixed settings: it must not depend on this machine's env."""
    from api.app import create_app
    from api.config import ApiSettings
    from shared.config import Settings

    # Nothing connects: the publisher only names its broker until the first publish.
    settings = Settings(database_url="sqlite://", broker_url="redis://localhost:6379/0")
    return create_app(settings, ApiSettings()).openapi()


def render(spec: dict[str, Any]) -> str:
    """Deterministic text (sorted keys, indent 2, trailing newline), so a diff shows only real changes."""
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


api_app = typer.Typer(no_args_is_help=True, help="The HTTP API: its OpenAPI document.")


@api_app.command("openapi")
def write_openapi(
    out: Annotated[Path, typer.Option(help="Where to write the document.")] = SPEC_PATH,
    check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 if OUT differs from what the app generates.")] = False,
) -> None:
    """Write the API's OpenAPI document (deterministic JSON), or check that the written one is current."""
    from shared.cli import console

    text, shown = render(build()), escape(str(out))
    if check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            console.print(f"{shown} is {'missing' if current is None else 'out of date'}; "
                          f"run '{REGENERATE} --out {shown}'", soft_wrap=True)
            raise typer.Exit(code=1)
        console.print(f"{shown} is up to date", soft_wrap=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {shown} ({len(text)} bytes)", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``api`` group (``tagger api openapi``) to the root ``tagger`` command."""
    app.add_typer(api_app, name="api")
