#!/usr/bin/env bash
# The full study on real data and one CUDA GPU, in one command, resumable (run it again after a stop):
#
#   examples/covid_cxr/scripts/full_study_gpu.sh COHEN_DIR KERMANY_DIR [OUT] [more covid-cxr options]
#
# COHEN_DIR is the COVID-19 image data collection (metadata.csv + images/), KERMANY_DIR Kermany's
# chest_xray folder ({train,test}/{NORMAL,PNEUMONIA}). The paper's settings: 512 px, 5 subject-wise
# folds, ImageNet weights (downloaded by torchvision and timm on first use, or taken from their
# caches), 20 epochs, every test image explained with all six methods. Environment:
#   SHORT=1        a short run to time the pipeline: 2 folds, 1 epoch, 16 explained images
#   PRETRAINED=0   start from random weights (no download)
#   BUDGET=20GiB   the explaining engine's GPU memory budget (default: what the GPU has free)
set -euo pipefail
cohen=${1:?usage: full_study_gpu.sh COHEN_DIR KERMANY_DIR [OUT] [covid-cxr options]}
kermany=${2:?usage: full_study_gpu.sh COHEN_DIR KERMANY_DIR [OUT] [covid-cxr options]}
out=${3:-covid_cxr_study}
shift $(( $# < 3 ? $# : 3 ))
root="$(cd "$(dirname "$0")/../../.." && pwd)"

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: this script is for a GPU machine')"
pip install -q -e "$root[examples]" -e "$root/examples/covid_cxr"

options=(--size 512 --folds 5 --epochs 20 --device cuda)
if [[ "${SHORT:-0}" == 1 ]]; then
    options=(--size 512 --folds 2 --epochs 1 --device cuda --explain-images 16)
fi
if [[ "${PRETRAINED:-1}" == 1 ]]; then
    options+=(--pretrained)
fi
if [[ -n "${BUDGET:-}" ]]; then
    options+=(--memory-budget "$BUDGET")
fi
time covid-cxr study --cohen "$cohen" --kermany "$kermany" --out "$out" "${options[@]}" "$@"
echo "report: $out/report.md (timings per stage: $out/timings.json)"
