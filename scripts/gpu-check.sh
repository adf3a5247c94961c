#!/usr/bin/env bash
# The GPU checks of d4s, on a machine with an NVIDIA GPU and its driver (no CUDA toolkit needed:
# scripts/cuda-toolchain.sh brings one from PyPI). Prints a Markdown report; also writes it to
# $OUT/gpu-check.md when OUT is set.
#
#   scripts/gpu-check.sh            # build, fixture tests on cuda, one edit per method, timings
#   SKIP_BUILD=1 scripts/gpu-check.sh   # reuse target/release/d4s from a cuda build
#
# 1. builds `--features cuda` for this GPU's compute capability;
# 2. runs the fixture tests (every tiny checkpoint against transformers, one ROME/MEMIT/D4S/
#    AlphaEdit edit on each) with the runtime on cuda, in f32;
# 3. applies one edit per method to the default model on cuda (bf16, the cuda default) and shows
#    p(target) before → after;
# 4. times one D4S edit and one probe run (ARC-Easy, 100 items) on cuda against the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."

report=$(mktemp)
say() { echo "$*" | tee -a "$report"; }
fail=0

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "error: nvidia-smi not found: this script needs a machine with an NVIDIA GPU and driver" >&2
  exit 2
fi
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | head -1)
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
say "# d4s GPU check — $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "GPU: $gpu; CPU: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
say ""

export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$cap}
eval "$(scripts/cuda-toolchain.sh)" || { echo "error: the CUDA toolchain did not install" >&2; exit 1; }

if [ -z "${SKIP_BUILD:-}" ]; then
  t0=$(date +%s)
  cargo build --release --features cuda --bins --tests >/tmp/gpu-check-build.log 2>&1 \
    || { tail -30 /tmp/gpu-check-build.log; echo "error: the cuda build failed" >&2; exit 1; }
  say "cuda build (compute capability $CUDA_COMPUTE_CAP): $(( $(date +%s) - t0 )) s"
fi
bin=target/release/d4s
$bin fetch >/dev/null 2>&1 || true

say ""
say "## Fixture tests on cuda (f32)"
say ""
for t in runtime_fixtures editors_fixtures; do
  if D4S_TEST_DEVICE=cuda cargo test --release --features cuda --test "$t" >/tmp/gpu-check-$t.log 2>&1; then
    say "- \`$t\`: $(grep -E '^test result' /tmp/gpu-check-$t.log | tail -1)"
  else
    fail=1
    say "- \`$t\`: FAILED"
    grep -E 'panicked|FAILED|error' /tmp/gpu-check-$t.log | head -10 | sed 's/^/    /' | tee -a "$report"
  fi
done

fact=(--subject "Danielle Darrieux" --prompt "The mother tongue of Danielle Darrieux is" --target English)
say ""
say "## One edit per method on the default model (cuda, bf16)"
say ""
say "| method | p(target): before → after | wall (s) |"
say "|---|---|---|"
for m in rome memit pmet alphaedit d4s ft-l ft-m grace; do
  t0=$EPOCHREALTIME
  out=$($bin edit --device cuda --method "$m" "${fact[@]}" 2>&1)
  rc=$?
  secs=$(python3 -c "print(round($EPOCHREALTIME - $t0, 1))")
  line=$(echo "$out" | grep -E '^p\(target' | sed -E 's/^p\(target \| prompt\): ([^ ]+ → [^ ]+).*/\1/')
  if [ $rc -ne 0 ] || [ -z "$line" ]; then
    fail=1; line="FAILED: $(echo "$out" | tail -1)"
  fi
  say "| $m | $line | $secs |"
done

say ""
say "## One D4S edit and one probe run: cuda against the CPU"
say ""
say "| device | dtype | edit wall (s) | edit phases (s) | ARC-Easy, 100 items (s) |"
say "|---|---|---|---|---|"
for dev in "cpu f32" "cuda bf16" "cuda f32"; do
  set -- $dev
  threads=$([ "$1" = cpu ] && nproc || echo 1)
  t0=$EPOCHREALTIME
  out=$($bin edit --device "$1" --dtype "$2" --threads "$threads" "${fact[@]}" 2>&1)
  secs=$(python3 -c "print(round($EPOCHREALTIME - $t0, 1))")
  phases=$(echo "$out" | grep -E '^time:' | sed -E 's/^time: //')
  dir=$(mktemp -d)
  $bin bench --device "$1" --dtype "$2" --threads "$threads" --protocol single --n 1 \
    --probes arc_easy --probe-items 100 --out "$dir/run" >/dev/null 2>&1
  probe=$(python3 -c "import json,sys; m=[json.loads(l) for l in open('$dir/run/metrics.jsonl')]; print(round(m[0]['probes']['arc_easy']['seconds'],1))" 2>/dev/null || echo "failed")
  say "| $1 | $2 | $secs | $phases | $probe |"
done

if [ -n "${OUT:-}" ]; then cp "$report" "$OUT/gpu-check.md"; fi
exit $fail
