#!/usr/bin/env bash
# The real-tier long runs on 2 CPU cores, in the background, resumable (issues 15 and 16): the
# baselines side by side with their reduced sweep (configs/sweep-smollm2.toml), then the
# CPU-sized Patcher table (configs/smollm2-cpu.toml). Every command skips what its run
# directory already holds, and each sitting is logged in the run's segments.json, so after an
# interruption run this again. Needs ../shared/data and models/smollm2-135m-instruct
# (`patcher fetch smollm2-135m`). Start it detached so it outlives the shell:
#   setsid nohup bash scripts/smollm2_long_runs.sh >/dev/null 2>&1 &
# Progress: runs/long-runs.log (one line per finished command), runs/<name>-<command>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
P=${P:-./target/release/patcher}
mkdir -p runs
step() {
  local name=$1 cmd=$2 t0
  t0=$(date +%s)
  nice -n 19 "$P" "$cmd" "configs/$name.toml" --out "runs/$name" >"runs/$name-$cmd.log" 2>&1
  local rc=$?
  echo "$(date -u +%FT%TZ) $(git rev-parse --short HEAD) $P $cmd configs/$name.toml: rc=$rc, $(( $(date +%s) - t0 )) s" >>runs/long-runs.log
  [ $rc -eq 0 ] || { echo "$cmd $name failed (rc=$rc): see runs/$name-$cmd.log" >&2; exit $rc; }
}
step sweep-smollm2 run
step sweep-smollm2 sweep
step smollm2-cpu run
step smollm2-cpu sweep
