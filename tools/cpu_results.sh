#!/usr/bin/env bash
# The "it must really learn" check of docs/results.md, on a CPU: pretrain each correspondence method for a
# fixed wall-clock budget on the shared frames and videos (never the davis/ sequences), two seeds each, then
# evaluate every encoder and the baselines by DAVIS-2017 label propagation with the official metrics.
#
#   bash tools/cpu_results.sh [train|eval|table|all]     (default: all)
#
# Environment: DATA (../shared/data), MINUTES (30: schedule.max_minutes of each run), SEEDS ("0 1"),
# METHODS ("crw mast corrflow timecycle"), JOBS (2: processes at once, each with one thread), RUNS (runs/cpu),
# STEPS (empty: the time budget): "NAME=N ..." gives the runs a step budget instead, NAME a run (crw_s0) or a
# method (crw), the run's entry first; a step budget gives the same weights however loaded the machine is
# (the schedules of configs/cpu are constant, so only the budget changes), and such runs may be niced.
# Run from the repository root in the environment of `bash tools/bootstrap.sh shell`. Each step skips what is
# already there (a finished run, an evaluation with its CSV), so a killed script resumes where it stopped.
set -euo pipefail
DATA=${DATA:-../shared/data}
MINUTES=${MINUTES:-30}
SEEDS=${SEEDS:-0 1}
METHODS=${METHODS:-crw mast corrflow timecycle}
JOBS=${JOBS:-2}
RUNS=${RUNS:-runs/cpu}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # JOBS processes share the cores; one thread each
mkdir -p "$RUNS/eval"

STEPS=${STEPS:-}

budget() {  # the schedule overrides of run $1 (method $2): its step budget if STEPS names it, else the minutes
    local entry
    for entry in $STEPS; do if [ "${entry%%=*}" = "$1" ]; then echo "schedule.steps=${entry#*=} schedule.max_minutes=0"; return; fi; done
    for entry in $STEPS; do if [ "${entry%%=*}" = "$2" ]; then echo "schedule.steps=${entry#*=} schedule.max_minutes=0"; return; fi; done
    echo "schedule.max_minutes=$MINUTES"
}

latest() { ls "$1"/checkpoints/ckpt_*.pt 2>/dev/null | tail -n 1; }

train() {
    # the seeds of one method train side by side (JOBS at once), so every run gets the same share of the cores
    for method in $METHODS; do
        for seed in $SEEDS; do
            run=$RUNS/${method}_s$seed
            if [ -f "$run/done" ]; then continue; fi
            read -r -a sched <<< "$(budget "${method}_s$seed" "$method")"
            echo "[cpu_results] train $run (${sched[*]})"
            ( vidssl train --config "configs/cpu/$method.yaml" seed="$seed" out_dir="$run" \
                  "${sched[@]}" "data.source=[$DATA/frames, $DATA/videos]" log.progress=false \
                  > "$run.log" 2>&1 && touch "$run/done" ) &
            while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
        done
        wait
    done
}

evaluate() {
    local specs=(identity)
    for seed in $SEEDS; do specs+=("random:$seed"); done
    # MAST's encoder trains on Lab and is evaluated on Lab: its random initialisation is compared on Lab too
    case " $METHODS " in *" mast "*) for seed in $SEEDS; do specs+=("random_lab:$seed"); done ;; esac
    # CRW trains a reflect-padded trunk (its recipe's scratch model): its random initialisation pads so too
    case " $METHODS " in *" crw "*) for seed in $SEEDS; do specs+=("random_reflect:$seed"); done ;; esac
    for method in $METHODS; do for seed in $SEEDS; do specs+=("$method:$seed"); done; done
    specs+=(pixels)
    for spec in "${specs[@]}"; do
        name=${spec/:/_s}
        out=$RUNS/eval/$name
        if [ -f "$out/global_results-val.csv" ]; then continue; fi
        case $spec in
            identity|pixels) args=(--encoder "$spec") ;;
            random:*) args=(--encoder random --seed "${spec#random:}") ;;  # resnet18_s8_l3, as the runs
            random_lab:*) args=(--encoder random --seed "${spec#random_lab:}" --input lab) ;;
            random_reflect:*) args=(--encoder random --seed "${spec#random_reflect:}" --backbone resnet18_s8_l3_reflect) ;;
            *) ckpt=$(latest "$RUNS/$name"); args=(--encoder "$ckpt") ;;
        esac
        echo "[cpu_results] eval $name: ${args[*]}"
        vidssl eval davis --davis-root "$DATA/davis" --out "$out" --config configs/eval/crw.yaml "${args[@]}" \
            > "$out.log" 2>&1 &
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    done
    wait
}

table() {
    python tools/results_table.py "$RUNS" --json "$RUNS/results.json"
}

case ${1:-all} in
    train) train ;;
    eval) evaluate ;;
    table) table ;;
    all) train; evaluate; table ;;
    *) echo "usage: bash tools/cpu_results.sh [train|eval|table|all]" >&2; exit 2 ;;
esac
