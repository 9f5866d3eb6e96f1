# syntax=docker/dockerfile:1.7
# Light image for migrate, beat, flower and publish: the project WITHOUT the `ml` extra (no torch).
# Build from the repo root (compose does): docker build -f docker/Dockerfile.app .
# Ignore rules: docker/Dockerfile.app.dockerignore (BuildKit reads <Dockerfile>.dockerignore).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv "$VIRTUAL_ENV" \
 && useradd --system --create-home --uid 10001 tagger \
 && mkdir -p /var/lib/tagger \
 && chown tagger:tagger /var/lib/tagger

WORKDIR /app
# Dependencies in their own layer: editing the code does not reinstall them.
COPY pyproject.toml .ci/constraints.txt /tmp/build/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; p = tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies']))" > /tmp/build/requirements.txt \
 && pip install -c /tmp/build/constraints.txt -r /tmp/build/requirements.txt

COPY . /app
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps /app \
 && rm -rf /app/build /tmp/build

USER tagger
EXPOSE 5555 8000
# alembic.ini and alembic/ stay in /app (the working directory) for `tagger db upgrade`.
CMD ["tagger", "--help"]
