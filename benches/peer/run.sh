#!/usr/bin/env bash
# The peer comparison: EasyEdit's ROME and MEMIT (PyTorch, CPU) against d4s on the same weights,
# records, hparams YAML and covariance texts, one thread each, twice in opposite orders.
# Not part of CI. See benches/peer/README.md.
#
#   benches/peer/run.sh [N_RECORDS]        (default 5)
#
# Environment (all optional):
#   PEER_DIR   work folder (default /tmp/d4s-peer); the table lands in $PEER_DIR/table.md
#   VENV       a Python venv with torch, transformers and pyyaml (default /tmp/venv; made if absent)
#   EASYEDIT   an EasyEdit checkout (default: cloned from GitHub into $PEER_DIR)
#   SHARED     the shared data folder (default ../shared next to the repository)
#   METHODS    default "rome memit"
set -euo pipefail

N=${1:-5}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PEER_DIR=${PEER_DIR:-/tmp/d4s-peer}
VENV=${VENV:-/tmp/venv}
SHARED=${SHARED:-$REPO/../shared}
METHODS=${METHODS:-rome memit}
D4S=$REPO/target/release/d4s
HERE=$REPO/benches/peer
mkdir -p "$PEER_DIR"

say() { printf '\n== %s\n' "$*" >&2; }

if ! "$VENV/bin/python" -c "import torch, transformers, yaml" 2>/dev/null; then
  say "installing torch and transformers into $VENV (CPU use; the wheel brings ~6 GB of CUDA libraries)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch transformers pyyaml
fi

# EasyEdit: only easyeditor/ and hparams/ (a `git archive` of the whole tree fails on a media blob
# missing from the repository).
EE=$PEER_DIR/EasyEdit
if [ ! -d "$EE/easyeditor" ]; then
  SRC=${EASYEDIT:-$PEER_DIR/EasyEdit-git}
  if [ ! -d "$SRC/.git" ] && [ ! -e "$SRC/HEAD" ]; then
    say "cloning EasyEdit"
    git clone --quiet --depth 1 https://github.com/zjunlp/EasyEdit "$SRC"
  fi
  mkdir -p "$EE"
  git -C "$SRC" archive HEAD easyeditor hparams | tar -x -C "$EE"
fi
EE_COMMIT=$(git -C "${EASYEDIT:-$PEER_DIR/EasyEdit-git}" rev-parse --short HEAD 2>/dev/null || echo unknown)

say "building d4s and exporting the unedited default model"
(cd "$REPO" && cargo build --release --quiet)
rm -rf "$PEER_DIR/model"
"$D4S" export --unedited --out "$PEER_DIR/model"

IN=$PEER_DIR/in
"$VENV/bin/python" "$HERE/prepare.py" --model "$PEER_DIR/model" \
  --counterfact "$SHARED/data/counterfact_easyedit/counterfact-edit.json" \
  --wikitext "$SHARED/data/wikitext/wikitext-103-raw-v1/wikitext_103_test.json" \
  --easyedit "$EE" --n "$N" --out "$IN"

RUNS=$PEER_DIR/runs
rm -rf "$RUNS"
mkdir -p "$RUNS"

easyedit() { # order method
  local out=$RUNS/$1/easyedit-$2
  mkdir -p "$out"
  rm -rf "$IN/easyedit-stats" # the covariance is computed (and timed) in every run
  say "EasyEdit $2 ($1)"
  /usr/bin/time -f '%e %U %S %M' -o "$out/time.txt" \
    "$VENV/bin/python" "$HERE/easyedit_peer.py" --easyedit "$EE" --method "$2" \
    --hparams "$IN/$2.yaml" --records "$IN/records.json" --corpus "$IN/corpus.json" \
    --out "$out/result.json" > "$out/log.txt" 2>&1
}

d4s() { # order method
  local out=$RUNS/$1/d4s-$2
  say "d4s $2 ($1)"
  mkdir -p "$out"
  # A fresh d4s home: the statistics are computed (and timed) in every run.
  rm -rf "$out.home"
  D4S_HOME=$out.home /usr/bin/time -f '%e %U %S %M' -o "$out/time.txt" \
    "$D4S" --model "$PEER_DIR/model" --threads 1 bench --method "$2" --hparams "$IN/$2.yaml" \
    --data "$IN/records.json" --n "$N" --protocol single --gen off \
    --stats-corpus "$IN/corpus.json" --stats-tokens 100000000 \
    --out "$out/run" --overwrite > "$out/log.txt" 2>&1
}

for m in $METHODS; do
  easyedit easyedit-first "$m"
  d4s easyedit-first "$m"
  d4s d4s-first "$m"
  easyedit d4s-first "$m"
done

"$VENV/bin/python" "$HERE/summarize.py" --runs "$RUNS" --easyedit-commit "$EE_COMMIT" \
  --out "$PEER_DIR/table.md"
cat "$PEER_DIR/table.md"
