#!/usr/bin/env bash
# GPU readiness check of jaxdarts (about 5 minutes on one H100/H200).
#
#   benchmarks/gpu_check.sh [OUT.json] [--quick]
#
# Checks that dense and discrete NWOT rewards agree on this device, then prints
# rewards/s for 1, 16, 64, 256 architectures per call (both paths), PPO disc-nwot
# timesteps/s at the paper setting with 1 and 64 lockstep envs, and the projected wall
# time of 1M disc-nwot steps; writes everything to OUT.json (default gpu_check.json).
# --quick runs the same steps at small sizes (a check that works on a CPU).
set -euo pipefail
out="${1:-gpu_check.json}"
shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python "$here/run_all.py" --only gpu --json "$out" "$@"
