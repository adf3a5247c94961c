#!/bin/bash
# What A/B mode costs (BENCHMARKS.md §4): the TUI in tmux edits the first N facts of the demo deck
# with one method, then with two or three side by side, and reports the wall time until the last
# fact landed in every lane and the process's peak resident memory. Uses the cached statistics
# and model of the current d4s home (run the TUI once first), so it measures the edits.
#
#   scripts/ab-cost.sh [D4S_BINARY] [N] [THREADS] [METHODS...]
#   e.g. scripts/ab-cost.sh target/release/d4s 5 1 d4s d4s,alphaedit
#
# Each METHODS argument is one run: a single method or an A/B list. Needs tmux and GNU time.
set -euo pipefail
BIN=$(realpath "${1:-target/release/d4s}")
N=${2:-5}
THREADS=${3:-1}
shift 3 || true
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(d4s d4s,alphaedit)
WORK=$(mktemp -d)
head -n "$N" "$(dirname "$0")/../assets/demo_deck.jsonl" > "$WORK/deck.jsonl"
for methods in "${RUNS[@]}"; do
  flag="--method $methods"
  [[ "$methods" == *,* ]] && flag="--methods $methods"
  SESSION=ab-cost-$$
  rm -f "$WORK/time.txt"
  T0=$(date +%s.%N)
  tmux new-session -d -s "$SESSION" -x 160 -y 45 \
    "cd $WORK && /usr/bin/time -v -o time.txt $BIN --threads $THREADS tui $flag --no-session --probes none --deck deck.jsonl 2> err.txt; sleep 60"
  until tmux capture-pane -p -t "$SESSION" | grep -q "($N done, 0 running, 0 queued)"; do sleep 0.5; done
  T1=$(date +%s.%N)
  tmux capture-pane -p -t "$SESSION" > "$WORK/screen-${methods//,/-}.txt"
  tmux send-keys -t "$SESSION" Escape; sleep 0.3; tmux send-keys -t "$SESSION" q
  until [ -s "$WORK/time.txt" ]; do sleep 0.5; done
  tmux kill-session -t "$SESSION"
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$WORK/time.txt")
  printf '%-22s %d facts: %6.1f s until the last landed, peak RSS %d MiB\n' \
    "$methods" "$N" "$(echo "$T1 - $T0" | bc)" "$((rss / 1024))"
done
echo "(screens in $WORK)"
