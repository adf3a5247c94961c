#!/bin/bash
# Times a new user's first fact in the TUI (BENCHMARKS.md §4): an empty d4s home with only the
# cached default model linked in, `d4s tui` in a tmux terminal, a fact typed DELAY seconds after
# the start, and the time until the log says "landed".
#
#   scripts/first-fact.sh [D4S_BINARY] [DELAY_SECONDS]
#
# Stop other jobs first for an idle-machine number. Needs tmux and bc.
set -euo pipefail
BIN=${1:-target/release/d4s}
DELAY=${2:-20}
BIN=$(realpath "$BIN")
MODELS=${D4S_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/d4s}/models
[ -d "$MODELS" ] || { echo "no cached model under $MODELS: run d4s fetch first" >&2; exit 1; }
HOME_DIR=$(mktemp -d)
WORK=$(mktemp -d)
ln -s "$MODELS" "$HOME_DIR/models"
SESSION=first-fact-$$
cd "$WORK"
T0=$(date +%s.%N)
tmux new-session -d -s "$SESSION" -x 160 -y 45 \
  "D4S_HOME=$HOME_DIR $BIN tui --probes none --threads 1 2> err.txt; sleep 5"
sleep "$DELAY"
tmux send-keys -t "$SESSION" -l "Eiffel Tower | The Eiffel Tower is located in the city of | Rome"
tmux send-keys -t "$SESSION" Enter
until tmux capture-pane -p -t "$SESSION" | grep -q "landed in"; do sleep 0.5; done
T1=$(date +%s.%N)
tmux capture-pane -p -t "$SESSION" > "$WORK/screen.txt"
tmux kill-session -t "$SESSION"
echo "first fact landed $(echo "$T1 - $T0" | bc) s after the TUI started (screen: $WORK/screen.txt)"
