#!/usr/bin/env bash
# The NVIDIA check of issue 4, for a machine with one NVIDIA GPU: lint, then audit the two demo
# models and a small CNN on ort:cuda, ort:tensorrt and torch:cuda with --fix, so each TF32
# default (ORT-4, ORT-6, PT-2) runs beside its fix (use_tf32=0, NVIDIA_TF32_OVERRIDE=0,
# allow_tf32=0) and the fingerprint says which precision really ran.
#
# Installs what it needs where it can (onnxruntime-gpu for the CUDA and TensorRT providers,
# this package); a backend whose runtime is missing shows as a failed row with its reason, not a
# crash. Each audit is bounded by `timeout`; the whole script aims at under 8 minutes.
# Usage: bash bench/gpu_check.sh [out-folder]      Exit code 3: no NVIDIA GPU here.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${OUT:-$(mktemp -d)}}"
python="${PYTHON:-python3}"
start=$SECONDS
mkdir -p "$out"

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none); nothing to check" >&2
  exit 3
fi
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv

# What this machine has; install what is missing, quietly, and go on when installing fails.
export PYTHONPATH="$root/src:$root/bench${PYTHONPATH:+:$PYTHONPATH}"
have() { "$python" -c "import $1" >/dev/null 2>&1; }
for module in typer rich psutil sklearn onnx safetensors onnxscript packaging; do
  have "$module" || timeout 180 "$python" -m pip install -q "$root" >/dev/null 2>&1 || true
done
providers() { "$python" -c "import onnxruntime as o; print(' '.join(o.get_available_providers()))" 2>/dev/null; }
if ! providers | grep -q CUDAExecutionProvider; then
  echo "installing onnxruntime-gpu (the CUDA and TensorRT execution providers)"
  timeout 240 "$python" -m pip install -q onnxruntime-gpu >/dev/null 2>&1 \
    || echo "could not install onnxruntime-gpu: ort:cuda and ort:tensorrt will fail with a reason"
fi
echo "onnxruntime providers: $(providers)"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  || echo "no PyTorch with CUDA here: torch:cuda will fail with a reason"

backends=(-b ort:cuda -b ort:tensorrt -b torch:cuda)
echo; echo "== lint (nothing runs)"
"$python" -m modelparity.cli lint "${backends[@]}"

run() {  # name, model, task, extra options...
  local name=$1 model=$2 task=$3; shift 3
  echo; echo "== $name: $model ($(( SECONDS - start )) s so far)"
  timeout 150 "$python" -m modelparity.cli run "$model" "${backends[@]}" --fix --task "$task" \
    --out "$out/$name" --show-flips 3 --timeout 120 "$@"
  echo "exit code: $?"
}
run mlp modelparity.demo.models:mlp_4x3 multilabel --samples 20000
run cancer modelparity.demo.models:breast_cancer_classifier binary --samples 20000 \
  --value-range=-3,3
run cnn fingerprint_models:cnn multiclass --samples 4000

echo; echo "gpu_check: done in $(( SECONDS - start )) s; reports under $out"
