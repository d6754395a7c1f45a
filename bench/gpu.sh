#!/usr/bin/env bash
# GPU benchmarks in one call (issues 17, 29), within 10 minutes on a machine with CUDA (9 once installed):
#   1. installs what is missing from the project's own pyproject.toml (pip install -e ".[paper,dev]";
#      offline machines: point PIP_FIND_LINKS / PIP_NO_INDEX at a wheel folder; gpu mode only);
#   2. the paper profile at steady-state sizes: 120 utterances of up to 8 s, batches of 160 s of padded
#      audio, every model against its one-at-a-time loop, exact, fast mode and forced bf16, twice
#      alternating (bench/throughput.py section 3: audio-s/s, ratio to the loops, spread, batch size, peak
#      memory, and fast mode's accuracy: bf16 vs exact per model);
#   3. the service with one GPU worker in fast mode on a 200-pair job (bench/gpu_service.py: audio-s/s, GPU memory
#      peak and utilisation from nvidia-smi).
# Everything printed also goes to $EMOPRES_BENCH_DIR/gpu-<mode>.txt (the tables), the paper numbers to
# gpu-<mode>-paper.json beside it.
#
#   bash bench/gpu.sh            # on the GPU machine
#   bash bench/gpu.sh tiny       # CPU dry run at tiny size (the test suite runs this, so it cannot rot)
#   bash bench/gpu.sh check      # syntax and --help of every step only (seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-gpu}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK=${EMOPRES_BENCH_DIR:-${TMPDIR:-/tmp}/emopres-bench}

case "$MODE" in
  gpu)  DEVICE=cuda; PAPER=(--paper-n 120 --paper-max-seconds 8 --paper-batch-seconds 160 --repeat 2 --paper-bf16)
        SERVICE=(--pairs 200 --device cuda --fast); PAPER_LIMIT=300; SERVICE_LIMIT=240 ;;
  tiny) DEVICE=cpu; PAPER=(--paper-size tiny --paper-n 2 --paper-max-seconds 1.5 --paper-batch-seconds 4 --repeat 1 --paper-bf16)
        SERVICE=(--pairs 2 --device cpu --tiny --bootstrap 20 --fast); PAPER_LIMIT=240; SERVICE_LIMIT=240 ;;
  check) bash -n "$0"
        for script in bench/throughput.py bench/gpu_service.py; do "$PY" "$script" --help > /dev/null; done
        echo "gpu.sh check: ok"; exit 0 ;;
  *) echo "usage: bench/gpu.sh [gpu|tiny|check]" >&2; exit 2 ;;
esac

if ! "$PY" -c "import torch, transformers, funasr, fastapi, httpx, app, worker, models" 2> /dev/null; then
  if [ "$MODE" != gpu ]; then  # dry runs never install: they run inside a shared development environment
    echo "gpu.sh $MODE: the project's dependencies are not importable with $PY" >&2; exit 1
  fi
  echo "== installing from pyproject.toml (.[paper,dev])"
  "$PY" -m pip install -q -e ".[paper,dev]"
fi
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: run bench/gpu.sh tiny for a CPU dry run'; print('== GPU', torch.cuda.get_device_name(0), torch.__version__)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
START=$(date +%s)
mkdir -p "$WORK"
TABLE="$WORK/gpu-$MODE.txt"
exec > >(tee "$TABLE") 2>&1
echo "== paper profile vs the one-at-a-time loops ($MODE)"
timeout "$PAPER_LIMIT" "$PY" bench/throughput.py --only paper --device "$DEVICE" --workdir "$WORK" "${PAPER[@]}" \
  --json "$WORK/gpu-$MODE-paper.json"
echo "== service, one paper worker on $DEVICE ($MODE)"
timeout "$SERVICE_LIMIT" "$PY" bench/gpu_service.py --workdir "$WORK" "${SERVICE[@]}"
echo "== tables in $TABLE, paper numbers in $WORK/gpu-$MODE-paper.json"
echo "== gpu.sh $MODE done in $(( $(date +%s) - START )) s"
