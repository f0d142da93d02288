#!/usr/bin/env bash
# The "it must really learn" check of the temporal-order tasks (docs/results.md), on a CPU: pretrain each method
# for a fixed wall-clock budget on the shared frames and videos (never the davis/ sequences), two seeds each, then
# score (1) the method's own task on the DAVIS frames against chance (vidssl eval pretext --videos), (2) a linear
# probe of the frozen trunk on the synthetic motion-pattern action set against the same random trunk (vidssl eval
# action), and optionally (3) DAVIS-2017 label propagation (the davis step, as tools/cpu_results.sh).
#
#   bash tools/temporal_results.sh [train|pretext|action|davis|table|all]     (default: all but davis)
#
# Environment: DATA (../shared/data), MINUTES (20: schedule.max_minutes), SEEDS ("0 1"), METHODS ("shuffle_learn
# opn arrow_of_time o3n vcop"), JOBS (2 processes at once, one thread each), RUNS (runs/temporal), SAMPLES (40
# pretext samples per DAVIS sequence), ACTION_TRAIN / ACTION_TEST (24 / 24 synthetic action videos per class),
# BN_FRAMES (256: the random_bn reference's recalibration frames); per run name N (N_s<seed>): CONFIG_N (the
# configs/cpu/ stem, default N: an ablation names its variant, e.g. CONFIG_vivi_frame=vivi), EXTRA_N (overrides
# for N's runs), STEPS_N (a step budget instead of MINUTES: the weights then do not depend on what else shares the
# cores). Run from the repository root in the environment of `bash tools/bootstrap.sh shell`. Each step skips what
# is already there (a finished run, a result JSON), so a killed script resumes. VIVI and DPC (issue 15) train here
# and are scored by tools/cross_eval.py (CIFAR kNN and DAVIS J&F), having no task of their own to score.
set -euo pipefail
DATA=${DATA:-../shared/data}
MINUTES=${MINUTES:-20}
SEEDS=${SEEDS:-0 1}
METHODS=${METHODS:-shuffle_learn opn arrow_of_time o3n vcop}
JOBS=${JOBS:-2}
RUNS=${RUNS:-runs/temporal}
SAMPLES=${SAMPLES:-40}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$RUNS/eval"
ACTION_TRAIN=${ACTION_TRAIN:-24}  # synthetic action videos per class for the probe's training
ACTION_TEST=${ACTION_TEST:-24}  # and for its test (one test video is 100 / (8 x ACTION_TEST) points)
ACTIONS=$RUNS/actions_${ACTION_TRAIN}x$ACTION_TEST  # the synthetic action set, written once (seed 0)
BN_FRAMES=${BN_FRAMES:-256}  # training frames the random_bn reference recomputes its batch-norm statistics on
ACTION_ARGS=(--frames 8 --stride 2 --resize 64 --size 64 --pool 2 --temporal concat --train-clips 2 --test-clips 3)

latest() { ls "$1"/checkpoints/ckpt_*.pt 2>/dev/null | tail -n 1; }
per_name() {  # per_name CONFIG NAME DEFAULT: the name's own setting (CONFIG_NAME), else DEFAULT
    local v="$1_$2"
    if [[ ! $v =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        echo "[temporal_results] method name '$2' cannot carry $1_<name> settings: use letters, digits and _" >&2
        exit 2
    fi
    echo "${!v:-$3}"
}
wait_slot() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done; }

train() {
    for method in $METHODS; do
        for seed in $SEEDS; do
            run=$RUNS/${method}_s$seed
            if [ -f "$run/done" ]; then continue; fi
            steps=$(per_name STEPS "$method" "")
            if [ -n "$steps" ]; then budget=(schedule.steps="$steps" schedule.max_minutes=0) what="$steps steps"
            else budget=(schedule.max_minutes="$MINUTES") what="$MINUTES min"; fi
            echo "[temporal_results] train $run ($what)"
            # shellcheck disable=SC2046  # EXTRA_N is a list of overrides
            ( vidssl train --config "configs/cpu/$(per_name CONFIG "$method" "$method").yaml" seed="$seed" \
                  out_dir="$run" "${budget[@]}" "data.source=[$DATA/frames, $DATA/videos]" log.progress=false \
                  $(per_name EXTRA "$method" "") > "$run.log" 2>&1 && touch "$run/done" ) &
            wait_slot
        done
    done
    wait
}

pretext() {
    for method in $METHODS; do for seed in $SEEDS; do
        out=$RUNS/eval/pretext_${method}_s$seed.json
        if [ -f "$out" ]; then continue; fi
        echo "[temporal_results] pretext ${method}_s$seed"
        vidssl eval pretext --checkpoint "$(latest "$RUNS/${method}_s$seed")" --videos "$DATA/davis/JPEGImages/480p" \
            --samples-per-video "$SAMPLES" --batch-size 16 --device cpu --json "$out" \
            > "${out%.json}.log" 2>&1 &
        wait_slot
    done; done
    wait
}

action() {
    if [ ! -f "$ACTIONS/ucfTrainTestlist/testlist01.txt" ]; then
        vidssl data synth-actions --out "$ACTIONS" --frames 16 --size 64 --train-per-class "$ACTION_TRAIN" \
            --test-per-class "$ACTION_TEST"
    fi
    local specs=()
    for seed in $SEEDS; do
        specs+=("random:$seed" "random_bn:$seed")
        # the random trunk of this seed with batch-norm statistics recomputed on training frames (weights untouched):
        # what any short training run gives its trunk for free, the second reference of the table
        bn=$RUNS/random_bn_s$seed.pt
        if [ ! -f "$bn" ]; then
            python tools/random_encoder.py --backbone resnet18_s8_l3 --seed "$seed" --bn-from "$DATA/frames" \
                "$DATA/videos" --bn-frames "$BN_FRAMES" --bn-size 112 --out "$bn"
        fi
    done
    for method in $METHODS; do for seed in $SEEDS; do specs+=("$method:$seed"); done; done
    for spec in "${specs[@]}"; do
        name=${spec/:/_s}
        out=$RUNS/eval/action_$name.json
        if [ -f "$out" ]; then continue; fi
        case $spec in
            random:*) args=(--encoder random --backbone resnet18_s8_l3 --seed "${spec#random:}") ;;
            random_bn:*) args=(--encoder "$RUNS/$name.pt") ;;
            *) args=(--encoder "$(latest "$RUNS/$name")") ;;
        esac
        echo "[temporal_results] action $name"
        vidssl eval action --root "$ACTIONS" "${args[@]}" "${ACTION_ARGS[@]}" --device cpu --json "$out" \
            > "${out%.json}.log" 2>&1 &
        wait_slot
    done
    wait
}

davis() {
    local specs=()
    for seed in $SEEDS; do specs+=("random:$seed"); done
    for method in $METHODS; do for seed in $SEEDS; do specs+=("$method:$seed"); done; done
    for spec in "${specs[@]}"; do
        name=${spec/:/_s}
        out=$RUNS/eval/davis_$name
        if [ -f "$out/global_results-val.csv" ]; then continue; fi
        case $spec in
            random:*) args=(--encoder random --seed "${spec#random:}") ;;
            *) args=(--encoder "$(latest "$RUNS/$name")") ;;
        esac
        echo "[temporal_results] davis $name"
        vidssl eval davis --davis-root "$DATA/davis" --out "$out" --config configs/eval/crw.yaml "${args[@]}" \
            > "$out.log" 2>&1 &
        wait_slot
    done
    wait
}

table() { python tools/temporal_table.py "$RUNS"; }

case "${1:-all}" in
    train) train ;;
    pretext) pretext ;;
    action) action ;;
    davis) davis ;;
    table) table ;;
    all) train; pretext; action; table ;;
    *) echo "usage: $0 [train|pretext|action|davis|table|all]" >&2; exit 2 ;;
esac
