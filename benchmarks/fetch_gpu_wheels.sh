#!/usr/bin/env bash
# Download the comparison libraries of bench_triton.py into .devwheels/ (git-ignored), for a GPU
# machine that has torch and triton but no network: carry the folder and gpu_session.sh installs it.
# open_clip's other dependencies (torchvision, regex, tqdm, huggingface-hub, safetensors, timm) are
# in the lent machines' image; ftfy and wcwidth are not.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .devwheels
python3 -m pip download --no-deps --dest .devwheels open_clip_torch inf_cl ftfy wcwidth
ls -l .devwheels
