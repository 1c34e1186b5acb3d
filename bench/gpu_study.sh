#!/usr/bin/env bash
# The CIFAR-10 study on one GPU machine in one call: several `resnetkit reproduce --only` processes share
# the GPU (small CIFAR nets leave it mostly idle one at a time), each resuming what an earlier call left.
#
# Here, before the call (the 77 MB tar gzips to 16 MB: its 50,000 JPEG headers repeat):
#   mkdir -p .gpu && gzip -c ../shared/datasets/cifar10-train-jpeg.tar > .gpu/cifar10-train-jpeg.tar.gz
#   (and, to continue an earlier call or the CPU study, unpack its returned study-*.tar.gz files, or copy the
#   carried study/fast-e80/ folders, into .gpu/study/)
#   echo /.gpu/ >> .git/info/exclude
# The call (device tool): carry [".gpu"], command `bash bench/gpu_study.sh 540` (seconds of training).
# The data is unpacked on the device at the path the CPU study records (/work/shared/datasets/...): a run resumes
# only with the data it started with, compared by path, so the runs go both ways (CPU -> GPU -> CPU).
# Afterwards: unpack the returned $OUT/study-*.tar.gz into .gpu/study/ here (or /work/study/NAME, then
# study/carry.sh); the next call continues them.
set -uo pipefail
budget=${1:-540}                       # stop the trainers after this many seconds; they resume next call
scale=${SCALE:-1.0}                    # the paper's full schedule by default
schedule=${SCHEDULE:-paper}            # or fast: the cifar10-fast recipe, EPOCHS long (the study the CPU resumes:
epochs=${EPOCHS:-0}                    #   SCHEDULE=fast EPOCHS=80 AMP=none, its runs carried in .gpu/study)
amp=${AMP:-}                           # empty: the recipe's precision
val=${VAL:-5000}                       # held-out images, as the paper
runs=${RUNS:-"resnet20 plain20 resnet32 plain32 resnet44 plain44 resnet56 plain56 resnet110"}
study=${STUDY:-.gpu/study}             # fast-e160 (RUNS=resnet56 EPOCHS=160): STUDY=.gpu/study-e160
out=${OUT:-/tmp/out}
data=${DATA:-/work/shared/datasets/cifar10-train-jpeg.tar}  # where the CPU study's runs say they read it
mkdir -p "$study" "$out"
if [ ! -f "$data" ]; then
  if ! { mkdir -p "$(dirname "$data")" && gunzip -c .gpu/cifar10-train-jpeg.tar.gz > "$data.part" && mv "$data.part" "$data"; }; then
    data=$PWD/.gpu/cifar10-train-jpeg.tar  # runs carried from the CPU study will be refused (another data path)
    echo "gpu_study.sh: cannot write the data where the CPU study read it; using $data" >&2
    gunzip -c .gpu/cifar10-train-jpeg.tar.gz > "$data" || exit 1
  fi
fi
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

pids=()
for run in $runs; do
  timeout --signal=INT "$budget" python3 -m resnetkit.cli reproduce cifar10 \
    --data "$data" --out "$study" --depths 20 32 44 56 110 --plain \
    --schedule "$schedule" --epochs-scale "$scale" --epochs "$epochs" ${amp:+--amp "$amp"} --val-split "$val" \
    --only "$run" --no-progress >"$out/$run.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

# The report from whatever finished (described by the study's own study.json: its data, out-dir and schedule),
# then the runs back as what study/carry.sh keeps (a finished run's records and model, no checkpoint; an unfinished
# run's checkpoint), packed into archives of at most 15 MiB: the device returns 8 files of at most 16 MiB.
python3 -c "
import json; from pathlib import Path; from resnetkit.config import StudyConfig; from resnetkit.reproduce import write_study_report
study = Path('$study')
print(write_study_report(study, StudyConfig.from_dict(json.loads((study / 'study.json').read_text()))))"
tail -n 3 "$out"/*.log
python3 - "$study" "$out" <<'PY'
import sys, tarfile
from pathlib import Path

study, out = Path(sys.argv[1]), Path(sys.argv[2])
LIMIT, ARCHIVES = 15 * 2**20, 8  # bytes before compression (checkpoints gzip to ~90%), files the device returns
FINISHED = ("analysis.json", "config.json", "metrics.jsonl", "model.safetensors", "report.json")
UNFINISHED = ("checkpoint.pt", "config.json", "metrics.jsonl")
groups = [[p for p in [study / "report.md", study / "report.json", study / "study.json", *study.glob("*.png")]
           if p.is_file()]]
for run in sorted(p for p in study.iterdir() if p.is_dir()):
    files = [run / f for f in (FINISHED if (run / "analysis.json").exists() else UNFINISHED) if (run / f).is_file()]
    size = sum(f.stat().st_size for f in files)
    fit = next((g for g in groups if sum(f.stat().st_size for f in g) + size <= LIMIT), None)
    if fit is None:
        groups.append(fit := [])
    fit.extend(files)
for i, group in enumerate(groups):
    if i >= ARCHIVES:
        print(f"gpu_study.sh: {sorted({f.parent.name for f in group})} do not fit in the device's {ARCHIVES} files: "
              "they stay on the device", file=sys.stderr)
        continue
    with tarfile.open(out / f"study-{i}.tar.gz", "w:gz") as archive:
        for f in group:
            archive.add(f, arcname=str(f.relative_to(study)))
PY
ls -la "$out"
