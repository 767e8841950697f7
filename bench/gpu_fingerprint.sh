#!/usr/bin/env bash
# On a machine with one NVIDIA GPU (Ampere or later) and PyTorch with CUDA: does the fingerprint
# see PyTorch's TF32 defaults? cuDNN convolutions default to TF32 (torch.backends.cudnn.allow_tf32
# is True), float32 matmuls do not (matmul precision "highest") unless set to "high".
# Expected: CNN on torch:cuda -> tf32; MLP on torch:cuda -> fp32; with allow_tf32=0 -> fp32;
# MLP with matmul_precision=high -> tf32. Uses only what the machine has (onnx, onnxruntime,
# onnxscript, scikit-learn, typer, rich, psutil, safetensors); nothing is installed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$(mktemp -d)}"
export PYTHONPATH="$root/src:$root/bench${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for family in cnn mlp; do
  python3 -m modelparity.cli run "fingerprint_models:$family" --task multiclass --samples 4000 \
    -b torch:cuda -b 'torch:cuda?allow_tf32=0' -b 'torch:cuda?matmul_precision=high' \
    --out "$out/$family" --show-flips 3
  echo "exit code: $?"
done
