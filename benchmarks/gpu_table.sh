#!/usr/bin/env bash
# The GPU inference table of docs/benchmarks.md: every figure from benchmarks/inference_speed.py,
# one JSON file per run in the folder given as $1 (and a log of the printed tables).
#
#   bash benchmarks/gpu_table.sh OUT_DIR
#
# Sized for one H200 in under 6 minutes (40 short runs, models built with random weights); a
# run that has not started by BUDGET_S seconds is skipped and named in the log.
set -u
out=${1:?usage: bash benchmarks/gpu_table.sh OUT_DIR}
mkdir -p "$out"
log="$out/log.txt"
budget=${BUDGET_S:-330}
start=$SECONDS
short=(--device cuda --warmup 3 --repeats 10)

run() {  # run NAME ARGS...: one benchmark, its JSON as OUT_DIR/NAME.json
    local name=$1
    shift
    if ((SECONDS - start > budget)); then
        echo "SKIPPED (time budget): $name" | tee -a "$log"
        return
    fi
    echo "== $name" >>"$log"
    timeout 90 python benchmarks/inference_speed.py "${short[@]}" --json "$out/$name.json" "$@" \
        >>"$log" 2>&1 || echo "FAILED ($?): $name" | tee -a "$log"
}

rcnn=(
    "mask_rcnn:configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
    "mask_scoring:configs/COCO-InstanceSegmentation/mask_scoring_rcnn_R_50_FPN_1x.yaml"
    "cascade:configs/COCO-InstanceSegmentation/mask_scoring_cascade_rcnn_R_50_FPN_1x.yaml"
    "parsing:configs/CIHP-Parsing/parsing_rcnn_R_50_FPN_1x.yaml"
)
for entry in "${rcnn[@]}"; do
    name=${entry%%:*} config=${entry#*:}
    for detections in 10 100; do
        run "${name}_det${detections}_b1_fp32" --config-file "$config" --detections $detections
        run "${name}_det${detections}_b1_bf16" --config-file "$config" --detections $detections --amp bf16
    done
    run "${name}_det100_b4_fp32" --config-file "$config" --detections 100 --batch 4
    run "${name}_det100_b4_bf16" --config-file "$config" --detections 100 --batch 4 --amp bf16
done

pdl=configs/Cityscapes-PanopticSegmentation/panoptic_deeplab_R_52_os16_mg124_poly_90k_bs32_crop_512_1024.yaml
for batch in 1 4; do
    run "panoptic_deeplab_b${batch}_fp32" --config-file $pdl --batch $batch --height 1024 --width 2048
    run "panoptic_deeplab_b${batch}_bf16" --config-file $pdl --batch $batch --height 1024 --width 2048 \
        --amp bf16
done

for head in pspnet deeplabv3plus upernet; do
    config=$(ls configs/Cityscapes-SemanticSegmentation/${head}_R_50_*512x1024_80k.yaml)
    for batch in 1 2; do
        run "${head}_b${batch}_fp32" --config-file "$config" --batch $batch --height 1024 --width 2048
        run "${head}_b${batch}_bf16" --config-file "$config" --batch $batch --height 1024 \
            --width 2048 --amp bf16
    done
done
echo "done in $((SECONDS - start)) s" | tee -a "$log"
