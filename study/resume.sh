#!/usr/bin/env bash
# Put a carried study back where its command expects it (the out_dir in its study.json). A run already on this
# machine is replaced only when the carried one is further along (finished, or a checkpoint of a later epoch).
# Usage: study/resume.sh NAME    (then start study/queue.sh; carry again before the session ends)
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: study/resume.sh NAME}
.venv/bin/python - "study/$name" <<'PY'
import json, shutil, sys
from pathlib import Path

sys.path.insert(0, "study")
from progress import progress  # noqa: E402

carried = Path(sys.argv[1])
out = Path(json.loads((carried / "study.json").read_text())["out_dir"])
out.mkdir(parents=True, exist_ok=True)
if not (out / "study.json").exists():
    shutil.copy2(carried / "study.json", out / "study.json")
for run in sorted(p for p in carried.iterdir() if p.is_dir()):
    here, there = progress(run), progress(out / run.name)
    if here > there:
        shutil.rmtree(out / run.name, ignore_errors=True)
        shutil.copytree(run, out / run.name)
    print(f"{run.name}: {'restored' if here > there else 'kept the one here (as far or further)'}"
          f" (carried: {here}, here: {there}; epochs counted from 0)")
PY
