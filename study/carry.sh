#!/usr/bin/env bash
# Copy a CPU study's state from its out-dir into this folder and commit it, so that the next session (often a new
# machine that has only this repository) resumes it with study/resume.sh. Usage: study/carry.sh OUT_DIR NAME
#   unfinished runs: checkpoint.pt (model, optimizer, schedule, RNG, history: ~7 MB for ResNet-56) + config.json
#   finished runs:   analysis.json, config.json, metrics.jsonl (what `resnetkit reproduce` needs to skip them), and
#                    model.safetensors + report.json (what bench/ship_weights.py needs to ship them later)
# A merge, not a mirror: a carried run that OUT_DIR lacks is kept, and one is replaced only by a run as far or
# further along (study/progress.py), so carrying from a machine where resume.sh did not run loses nothing.
set -euo pipefail
out=${1:?usage: study/carry.sh OUT_DIR NAME}; name=${2:?usage: study/carry.sh OUT_DIR NAME}
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")" && pwd); dest=$here/$name
python=$here/../.venv/bin/python
# Whether progress $1 is as far as $2 or further (each inf, -1 or a whole epoch, as study/progress.py prints them).
ahead() { [ "$1" = inf ] || { [ "$2" != inf ] && [ "$1" -ge "$2" ]; }; }
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
if [ -d "$dest" ]; then cp -a "$dest/." "$dest.tmp/"; fi
cp "$out/study.json" "$dest.tmp/"
state=()
for run in "$out"/*/; do
  r=$(basename "$run"); [ -f "$run/config.json" ] || continue
  { read -r there; read -r carried; } < <("$python" "$here/progress.py" "$run" "$dest.tmp/$r")
  if ! ahead "$there" "$carried"; then
    echo "study/$name: kept the carried $r (carried: $carried, $out: $there; epochs counted from 0)"; continue
  fi
  rm -rf "$dest.tmp/$r"; mkdir -p "$dest.tmp/$r"
  if [ -f "$run/analysis.json" ]; then files="analysis.json config.json metrics.jsonl model.safetensors report.json"; what="$r done"
  else files="checkpoint.pt config.json"; what="$r at epoch $(( there + 1 ))"; fi
  for f in $files; do if [ -f "$run/$f" ]; then cp "$run/$f" "$dest.tmp/$r/"; fi; done
  state+=("$what")
done
rm -rf "$dest" && mv "$dest.tmp" "$dest"
cd "$here/.."
git add -A "study/$name"
# study.json records the last command's --only: a change to it alone is not progress worth a commit
if git diff --cached --quiet -- "study/$name" ":(exclude)study/$name/study.json"; then
  git reset -q -- "study/$name"; git checkout -q -- "study/$name/study.json" 2>/dev/null || true
  echo "study/$name: nothing new to carry"; exit 0
fi
message=$(IFS=,; echo "${state[*]}" | sed 's/,/, /g')
git commit -q -m "study: carry $name's state ($message)" -- "study/$name" && git log --oneline -1
