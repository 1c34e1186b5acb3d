#!/usr/bin/env bash
# The CIFAR-10 study on one GPU machine in one call: several `resnetkit reproduce --only` processes share
# the GPU (small CIFAR nets leave it mostly idle one at a time), each resuming what an earlier call left.
#
# Here, before the call (the 77 MB tar gzips to 16 MB: its 50,000 JPEG headers repeat):
#   mkdir -p .gpu && gzip -c ../shared/datasets/cifar10-train-jpeg.tar > .gpu/cifar10-train-jpeg.tar.gz
#   (and, to continue an earlier call, unpack its returned study-*.tar.gz files into .gpu/study/)
#   echo /.gpu/ >> .git/info/exclude
# The call (device tool): carry [".gpu"], command `bash bench/gpu_study.sh 540` (seconds of training).
# Afterwards: unpack the returned $OUT/study-*.tar.gz into .gpu/study/ here; the next call continues them.
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
mkdir -p "$study" "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

pids=()
for run in $runs; do
  timeout --signal=INT "$budget" python3 -m resnetkit.cli reproduce cifar10 \
    --data .gpu/cifar10-train-jpeg.tar.gz --out "$study" --depths 20 32 44 56 110 --plain \
    --schedule "$schedule" --epochs-scale "$scale" --epochs "$epochs" ${amp:+--amp "$amp"} --val-split "$val" \
    --only "$run" --no-progress >"$out/$run.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

# The report from whatever finished, then the runs back in at most 8 files of at most 16 MiB.
python3 -c "
from pathlib import Path; from resnetkit.config import StudyConfig; from resnetkit.reproduce import write_study_report
print(write_study_report(Path('$study'), StudyConfig(depths=(20, 32, 44, 56, 110), plain=True, schedule='$schedule', epochs_scale=$scale,
                    epochs=$epochs, amp='$amp', val_split=$val)))"
tail -n 3 "$out"/*.log
tar czf "$out/study-small.tar.gz" -C "$study" --exclude='tensorboard' report.md report.json study.json \
  $(cd "$study" && ls -d resnet20-* plain20-* resnet32-* plain32-* 2>/dev/null) 2>/dev/null
for net in resnet44 plain44 resnet56 plain56 resnet110; do
  dirs=$(cd "$study" && ls -d "$net"-* 2>/dev/null)
  [ -n "$dirs" ] && tar czf "$out/study-$net.tar.gz" -C "$study" --exclude='tensorboard' $dirs
done
ls -la "$out"
