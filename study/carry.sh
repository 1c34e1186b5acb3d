#!/usr/bin/env bash
# Copy a CPU study's state from its out-dir into this folder and commit it, so that the next session (often a new
# machine that has only this repository) resumes it with study/resume.sh. Usage: study/carry.sh OUT_DIR NAME
#   unfinished runs: checkpoint.pt (model, optimizer, schedule, RNG, history: ~7 MB for ResNet-56) + config.json
#   finished runs:   analysis.json, config.json, metrics.jsonl (what `resnetkit reproduce` needs to skip them)
set -euo pipefail
out=${1:?usage: study/carry.sh OUT_DIR NAME}; name=${2:?usage: study/carry.sh OUT_DIR NAME}
here=$(cd "$(dirname "$0")" && pwd); dest=$here/$name
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
cp "$out/study.json" "$dest.tmp/"
for run in "$out"/*/; do
  r=$(basename "$run"); [ -f "$run/config.json" ] || continue
  mkdir -p "$dest.tmp/$r"
  if [ -f "$run/analysis.json" ]; then files="analysis.json config.json metrics.jsonl"; else files="checkpoint.pt config.json"; fi
  for f in $files; do [ -f "$run/$f" ] && cp "$run/$f" "$dest.tmp/$r/"; done
done
rm -rf "$dest" && mv "$dest.tmp" "$dest"
state=$(cd "$dest" && for r in */; do r=${r%/}
  if [ -f "$r/analysis.json" ]; then echo "$r done"; else echo "$r at epoch $(grep -c . "$out/$r/metrics.jsonl" 2>/dev/null || echo '?')"; fi
done | paste -sd, - | sed 's/,/, /g')
cd "$here/.." && git add "study/$name" && git commit -q -m "study: carry $name's state ($state)" -- "study/$name" && git log --oneline -1
