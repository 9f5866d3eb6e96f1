#!/usr/bin/env bash
# The GPU numbers for docs/BENCHMARKS.md in one go, for the day a CUDA machine is lent (issue 13):
#   1. bench/model.py on the GPU: products/s of Tagger.predict (photos decoded from JPEG bytes on the
#      GPU, bf16 autocast) at a few batch sizes, and text only;
#   2. bench/pipeline.py on the GPU: the model on pre-decoded inputs vs end to end through Redis ->
#      a real worker (sub-batches, GPU decode) -> Postgres; its e2e/model ratio.
# Each step runs under its own time limit; the whole script stays under 8 minutes.
#
#   bench/gpu.sh                      # on a CUDA machine: fails at once (exit 2) without CUDA
#   bench/gpu.sh --device cpu --dry-run   # the CPU-fallback parts, tiny sizes (a check of the script)
#
# Needs: the project's environment (PYTHON, default .venv/bin/python), Redis and Postgres reachable
# at TAGGER_BENCH_REDIS / TAGGER_BENCH_POSTGRES (defaults: loopback 6379 db 11, 5432 tagger_bench;
# the pipeline step drops and re-creates that database and FLUSHDBs that Redis db).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DEVICE=cuda
DRY=0
N_MODEL=1024
BATCHES=32,64,128,256
N_PIPE=2048
PIPE_BATCH=128
PIPELINE=1
REDIS=${TAGGER_BENCH_REDIS:-redis://127.0.0.1:6379/11}
POSTGRES=${TAGGER_BENCH_POSTGRES:-postgresql+psycopg://postgres@127.0.0.1:5432/tagger_bench}

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --device cuda|cuda:N|cpu  --dry-run  --no-pipeline  --n-model N  --batches A,B  --n-pipeline N  --pipeline-batch B"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE=${2:?--device needs a value}; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --no-pipeline) PIPELINE=0; shift ;;
    --n-model) N_MODEL=${2:?}; shift 2 ;;
    --batches) BATCHES=${2:?}; shift 2 ;;
    --n-pipeline) N_PIPE=${2:?}; shift 2 ;;
    --pipeline-batch) PIPE_BATCH=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench/gpu.sh: unknown argument '$1'" >&2; usage >&2; exit 64 ;;
  esac
done
if [[ $DRY == 1 ]]; then
  N_MODEL=8; BATCHES=2,4; N_PIPE=8; PIPE_BATCH=4
fi
for v in "$N_MODEL" "$N_PIPE" "$PIPE_BATCH"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench/gpu.sh: sizes must be positive integers, got '$v'" >&2; exit 64; }
done
[[ $BATCHES =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "bench/gpu.sh: --batches wants e.g. 32,64, got '$BATCHES'" >&2; exit 64; }
[[ -x $PYTHON ]] || command -v "$PYTHON" >/dev/null || { echo "bench/gpu.sh: no Python at '$PYTHON' (set PYTHON)" >&2; exit 2; }

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TAGGER_DEVICE="$DEVICE"

# 0. The device: CUDA asked for and not there is a clear failure, not a CPU number passed off as a GPU one.
if [[ $DEVICE == cuda* ]]; then
  if ! "$PYTHON" - "$DEVICE" <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"bench/gpu.sh: --device {sys.argv[1]} but torch {torch.__version__} sees no CUDA device "
             f"(torch.cuda.is_available() is False); on a machine without a GPU use --device cpu --dry-run")
d = torch.device(sys.argv[1])
print(f"device: {torch.cuda.get_device_name(d)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF
  then
    exit 2
  fi
elif [[ $DEVICE != cpu ]]; then
  echo "bench/gpu.sh: --device must be cuda, cuda:N or cpu, got '$DEVICE'" >&2; exit 64
else
  echo "device: cpu (the fallback path; no GPU numbers from this run)"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

start=$SECONDS
# 1. The model alone (about 2 minutes on a GPU; the sizes above).
echo "=== bench.model: device $DEVICE, n $N_MODEL, batches $BATCHES ==="
timeout 180 "$PYTHON" -m bench.model --device "$DEVICE" --n "$N_MODEL" --batch "$BATCHES" 2>&1 \
  | grep -v 'Loading weights' || { echo "bench/gpu.sh: bench.model failed or passed its 180 s" >&2; exit 1; }

# 2. The pipeline (about 4 minutes: model load twice, one batched run; no one-task-per-event run).
if [[ $PIPELINE == 1 ]]; then
  if ! "$PYTHON" - "$REDIS" "$POSTGRES" <<'EOF'
import sys
import redis, sqlalchemy as sa
r, pg = sys.argv[1], sys.argv[2]
try:
    redis.Redis.from_url(r, socket_connect_timeout=3).ping()
except Exception as exc:
    sys.exit(f"bench/gpu.sh: Redis at {r} does not answer ({exc}); start one or set TAGGER_BENCH_REDIS")
admin = sa.make_url(pg).set(database="postgres")
try:
    sa.create_engine(admin, connect_args={"connect_timeout": 3}).connect().close()
except Exception as exc:
    sys.exit(f"bench/gpu.sh: Postgres at {admin.render_as_string()} does not answer ({type(exc).__name__}); "
             "start one or set TAGGER_BENCH_POSTGRES")
EOF
  then
    exit 3
  fi
  echo "=== bench.pipeline: device $DEVICE, n $N_PIPE, batch $PIPE_BATCH ==="
  timeout 300 "$PYTHON" -m bench.pipeline --n "$N_PIPE" --batch "$PIPE_BATCH" --skip-unbatched \
    --redis "$REDIS" --postgres "$POSTGRES" --ready-timeout 120 --timeout 200 2>&1 \
    | grep -v 'Loading weights' || { echo "bench/gpu.sh: bench.pipeline failed or passed its 300 s" >&2; exit 1; }
fi
echo "bench/gpu.sh: done in $((SECONDS - start)) s (device $DEVICE$([[ $DRY == 1 ]] && echo ', dry run: tiny sizes, not numbers to quote'))"
