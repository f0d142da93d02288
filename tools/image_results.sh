#!/usr/bin/env bash
# The "it must really learn" check of the image methods on a CPU (docs/results.md): pretrain each method on the
# shared CIFAR-10 subset for a fixed budget, two seeds, one thread each and two runs side by side; then the
# kNN probe (k 200, t 0.1, cosine) of every encoder and of the random initialisation on the test split.
#
#   bash tools/image_results.sh [train|eval|table|all]     (default: all)
#
# Environment: DATA (../shared/data/cifar10), MINUTES (5: schedule.max_minutes of each run), SEEDS ("0 1"),
# METHODS ("simclr moco moco_v3 byol simsiam barlow_twins vicreg swav dino supcon"), JOBS (2), RUNS (runs/image),
# BATCH (128), LR (empty: each config's rate, scaled to BATCH by its optim.lr_batch), BACKBONE (resnet18),
# EXTRA_<method> (overrides for that method's runs only, e.g. EXTRA_pcl="model.warmup_epochs=1": a schedule in
# epochs that the budget would never reach).
# The CPU scale, where one thread forces it: the ImageNet stem (stride-2 convolution and max-pool: 8x8 maps in
# layer1 at 32 px) instead of the CIFAR stem, which costs about 14 s a step at batch 128 on one thread (20 steps
# in 5 minutes); batch 128 (lightly's rates are stated per batch of 128: SGD 0.06, SwAV's Adam 1e-3) and a
# constant rate (the configs' cosine over 200 epochs would never leave its start). Everything else is configs/<method>_cifar.yaml (moco: moco_v2_cifar.yaml);
# the random baseline is the same BACKBONE. supcon reads the labels: the supervised reference row. Run from the
# repository root in the environment of `bash tools/bootstrap.sh shell`. Each step skips what is already there,
# so a killed script resumes where it stopped.
set -euo pipefail
DATA=${DATA:-../shared/data/cifar10}
MINUTES=${MINUTES:-5}
SEEDS=${SEEDS:-0 1}
METHODS=${METHODS:-simclr moco moco_v3 byol simsiam barlow_twins vicreg swav dino supcon}
JOBS=${JOBS:-2}
RUNS=${RUNS:-runs/image}
BATCH=${BATCH:-128}
LR=${LR:-}
BACKBONE=${BACKBONE:-resnet18}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$RUNS/eval"

extra() { local v="EXTRA_$1"; echo "${!v:-}"; }  # the method's own overrides, if any

latest() { ls "$1"/checkpoints/ckpt_*.pt 2>/dev/null | tail -n 1; }

train() {
    for method in $METHODS; do
        for seed in $SEEDS; do
            run=$RUNS/${method}_s$seed
            if [ -f "$run/done" ]; then continue; fi
            echo "[image_results] train $run ($MINUTES min)"
            config=configs/${method}_cifar.yaml
            if [ "$method" = moco ]; then config=configs/moco_v2_cifar.yaml; fi
            ( vidssl train --config "$config" seed="$seed" out_dir="$run" \
                  schedule.max_minutes="$MINUTES" schedule.name=constant schedule.steps=100000 \
                  data.batch_size="$BATCH" ${LR:+optim.lr="$LR"} model.backbone="$BACKBONE" data.workers=0 \
                  data.source="$DATA/train" $(extra "$method") \
                  log.progress=false > "$run.log" 2>&1 && touch "$run/done" ) &
            while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done  # a failed run: see its log
        done
    done
    wait || true
    for method in $METHODS; do for seed in $SEEDS; do
        [ -f "$RUNS/${method}_s$seed/done" ] || echo "[image_results] FAILED: $RUNS/${method}_s$seed ($RUNS/${method}_s$seed.log)"
    done; done
}

evaluate() {
    local specs=()
    for seed in $SEEDS; do specs+=("random:$seed"); done
    for method in $METHODS; do for seed in $SEEDS; do specs+=("$method:$seed"); done; done
    for spec in "${specs[@]}"; do
        name=${spec/:/_s}
        out=$RUNS/eval/$name.json
        if [ -f "$out" ]; then continue; fi
        case $spec in
            random:*) ;;
            *) if [ -z "$(latest "$RUNS/$name")" ]; then echo "[image_results] no checkpoint: $name"; continue; fi ;;
        esac
        case $spec in
            random:*) args=(--encoder random --backbone "$BACKBONE" --seed "${spec#random:}") ;;
            *) args=(--encoder "$(latest "$RUNS/$name")") ;;
        esac
        echo "[image_results] eval $name: ${args[*]}"
        vidssl eval knn --data "$DATA" --json "$out" "${args[@]}" > "$RUNS/eval/$name.log" 2>&1 &
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    done
    wait || true
}

table() {
    python tools/results_table.py "$RUNS" --json "$RUNS/results.json"
}

case ${1:-all} in
    train) train ;;
    eval) evaluate ;;
    table) table ;;
    all) train; evaluate; table ;;
    *) echo "usage: bash tools/image_results.sh [train|eval|table|all]" >&2; exit 2 ;;
esac
