#!/usr/bin/env bash
# Install cnnjax with the JAX build for one kind of machine, check that JAX runs on it, and run
# every benchmark (benchmarks/run_all.py, whose arguments follow):
#
#   benchmarks/run_on.sh cpu|gpu|tpu [--dry-run] [run_all.py's arguments ...]
#
# gpu: an NVIDIA GPU with a CUDA 12 driver (JAX's "cuda12" wheels bring the CUDA libraries);
# tpu: a Cloud TPU VM. --dry-run prints the commands (and run_all.py's) and installs nothing.
set -euo pipefail
usage="usage: run_on.sh cpu|gpu|tpu [--dry-run] [run_all.py arguments ...]"
target=${1:-}
case "$target" in
  cpu) jax="jax" ;;
  gpu) jax="jax[cuda12]" ;;
  tpu) jax="jax[tpu]" ;;
  *) echo "run_on.sh: unknown machine '$target' ($usage)" >&2; exit 2 ;;
esac
shift
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}

run() {
  echo "+ $*"
  if [ "$dry" = 0 ]; then "$@"; fi
}

run "$python" -m pip install "$here/.." "$jax"
run "$python" -c "import jax; b = jax.default_backend(); print(b, jax.devices()); \
assert b == '$target', f'JAX runs on {b}, not $target: check the driver and the install above'"
if [ "$dry" = 1 ]; then
  "$python" "$here/run_all.py" --dry-run "$@"
else
  "$python" "$here/run_all.py" "$@"
fi
