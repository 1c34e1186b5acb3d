#!/usr/bin/env bash
# Put a carried study back where its command expects it (the out_dir in its study.json) and print the command to run.
# Usage: study/resume.sh NAME    (then run the printed command with nohup; carry again before the session ends)
set -euo pipefail
name=${1:?usage: study/resume.sh NAME}; src=$(cd "$(dirname "$0")" && pwd)/$name
out=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['out_dir'])" "$src/study.json")
mkdir -p "$out" && cp -rn "$src"/. "$out"/
echo "restored $name into $out; continue it with the command in study/README.md"
