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
# epochs that the budget would never reach), BASELINES ("random"; set empty: none; "random random_lab" adds a random
# trunk reading the L of Lab, the baseline of colourisation and CMC, built on LAB_BACKBONE: resnet18_s8_l3 when colorization is
# in METHODS, else BACKBONE), LAYERS (empty; e.g. "2 3": also the kNN of stages 1..L
# pooled to 2 x 2, into RUNS/eval_l<L>/), PRETEXT (the methods with a task of their own: `vidssl eval pretext` on
# the test images, into RUNS/eval_pretext/), LINEAR (empty; 1: also the offline linear probe of every encoder's
# whole trunk).
# The CPU scale, where one thread forces it: the ImageNet stem (stride-2 convolution and max-pool: 8x8 maps in
# layer1 at 32 px) instead of the CIFAR stem, which costs about 14 s a step at batch 128 on one thread (20 steps
# in 5 minutes); batch 128 (lightly's rates are stated per batch of 128: SGD 0.06, SwAV's Adam 1e-3) and a
# constant rate (the configs' cosine over 200 epochs would never leave its start). Colourisation predicts colour per
# cell, and the ImageNet stem leaves one 1 x 1 cell at 32 px (refused by the method): its runs default to
# EXTRA_colorization="model.backbone=resnet18_s8_l3" (stride 8, the paper's dilated design; an EXTRA_colorization
# of your own replaces the default, so name the backbone there too). MoCo's runs default to
# EXTRA_moco="model.batch_negatives=true model.queue_size=1024" (the batch's other keys as negatives, and the queue at
# the recipe's age in steps, 4096 / 512 = 8 steps at batch 128: without them 5 minutes learn a recency shortcut and
# sit below random, docs/results.md "Why MoCo v2 sat below random"); PCL's, whose warm-up is MoCo, to those two and
# model.warmup_epochs=1 (its 20 warm-up epochs would cover the whole budget). NPID's and PIRL's default to
# EXTRA_<method>="model.bank_init=features" (the memory bank starts as the initial network's features instead of
# the authors' random vectors, which pull every image towards a random target for the first epoch; CMC, whose bank
# is the other view's target, loses by it and keeps the random one). Everything else is
# configs/<method>_cifar.yaml (moco: moco_v2_cifar.yaml); the random baseline is the same BACKBONE. supcon reads
# the labels: the supervised reference row. Run from the repository root in the environment of
# `bash tools/bootstrap.sh shell`. Each step skips what is already there, so a killed script resumes where it
# stopped.
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
BASELINES=${BASELINES-random}  # set and empty: no baseline
EXTRA_colorization=${EXTRA_colorization:-model.backbone=resnet18_s8_l3}
EXTRA_moco=${EXTRA_moco-model.batch_negatives=true model.queue_size=1024}  # set and empty: the recipe as it is
EXTRA_pcl=${EXTRA_pcl-model.warmup_epochs=1 model.batch_negatives=true model.queue_size=1024}
EXTRA_npid=${EXTRA_npid-model.bank_init=features}
EXTRA_pirl=${EXTRA_pirl-model.bank_init=features}
# random_lab is the baseline of the L-reading trunk: colourisation's own trunk when it is in the table, else BACKBONE
case " $METHODS " in *" colorization "*) lab_default=resnet18_s8_l3 ;; *) lab_default=$BACKBONE ;; esac
LAB_BACKBONE=${LAB_BACKBONE:-$lab_default}
LAYERS=${LAYERS:-}
LINEAR=${LINEAR:-}
PRETEXT=${PRETEXT:-rotation jigsaw relative_position colorization context_encoder exemplar}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$RUNS/eval"

extra() { local v="EXTRA_$1"; echo "${!v:-}"; }  # the method's own overrides, if any

latest() { ls "$1"/checkpoints/ckpt_*.pt 2>/dev/null | tail -n 1; }

train() {
    for method in $METHODS; do
        for seed in $SEEDS; do
            run=$RUNS/${method}_s$seed
            if [ -f "$run/done" ]; then continue; fi
            echo "[image_results] train $run ($MINUTES min) $(extra "$method")"
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

knn() {  # knn NAME OUT_DIR EXTRA_ARGS...: one kNN evaluation unless its JSON is there
    local name=$1 dir=$2; shift 2
    local out=$dir/$name.json args
    if [ -f "$out" ]; then return; fi
    case $name in
        random_s*) args=(--encoder random --backbone "$BACKBONE" --seed "${name#random_s}") ;;
        random_lab_s*) args=(--encoder "$RUNS/baselines/$name.pt") ;;
        *) if [ -z "$(latest "$RUNS/$name")" ]; then echo "[image_results] no checkpoint: $name"; return; fi
           args=(--encoder "$(latest "$RUNS/$name")") ;;
    esac
    echo "[image_results] eval $name: ${args[*]} $*"
    vidssl eval knn --data "$DATA" --json "$out" "${args[@]}" ${LINEAR:+--linear} "$@" > "$dir/$name.log" 2>&1 &
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
}

evaluate() {
    local names=()
    for base in $BASELINES; do for seed in $SEEDS; do
        names+=("${base}_s$seed")
        if [ "$base" = random_lab ] && [ ! -f "$RUNS/baselines/${base}_s$seed.pt" ]; then
            python tools/random_encoder.py --backbone "$LAB_BACKBONE" --channels 0 --input lab --seed "$seed" \
                --out "$RUNS/baselines/${base}_s$seed.pt"
        fi
    done; done
    for method in $METHODS; do for seed in $SEEDS; do names+=("${method}_s$seed"); done; done
    for name in "${names[@]}"; do knn "$name" "$RUNS/eval"; done
    for layers in $LAYERS; do
        mkdir -p "$RUNS/eval_l$layers"
        for name in "${names[@]}"; do LINEAR='' knn "$name" "$RUNS/eval_l$layers" --layers "$layers" --pool 2; done
    done
    mkdir -p "$RUNS/eval_pretext"
    for method in $METHODS; do
        case " $PRETEXT " in *" $method "*) ;; *) continue ;; esac
        for seed in $SEEDS; do
            name=${method}_s$seed out=$RUNS/eval_pretext/${method}_s$seed.json
            if [ -f "$out" ] || [ -z "$(latest "$RUNS/$name")" ]; then continue; fi
            echo "[image_results] pretext $name"
            vidssl eval pretext --checkpoint "$(latest "$RUNS/$name")" --data "$DATA/test" --json "$out" \
                > "$RUNS/eval_pretext/$name.log" 2>&1 &
            while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
        done
    done
    wait || true
}

table() {
    python tools/results_table.py "$RUNS" --json "$RUNS/results.json"
    if [ -n "$LINEAR" ]; then
        echo; echo "linear probe:"; python tools/results_table.py "$RUNS" --score linear --json "$RUNS/results_linear.json"
    fi
    for layers in $LAYERS; do
        echo; echo "kNN of stages 1..$layers, pooled to 2 x 2:"
        python tools/results_table.py "$RUNS" --eval "eval_l$layers" --json "$RUNS/results_l$layers.json"
    done
    if ls "$RUNS"/eval_pretext/*.json > /dev/null 2>&1; then
        echo; python tools/results_table.py "$RUNS" --eval eval_pretext --json "$RUNS/results_pretext.json"
    fi
}

case ${1:-all} in
    train) train ;;
    eval) evaluate ;;
    table) table ;;
    all) train; evaluate; table ;;
    *) echo "usage: bash tools/image_results.sh [train|eval|table|all]" >&2; exit 2 ;;
esac
