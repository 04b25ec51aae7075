#!/usr/bin/env bash
# The GPU figures in benchmarks/README.md, in one go (a few minutes on one H100/H200):
# CUDA-path tests, the ImageNet input pipeline at batch 128 and 256 (bf16-mixed, worker and nvjpeg decoding),
# and Lightning-vs-plain throughput with and without channels_last. Runs from the repository root with a
# python3 that has torch, torchvision, lightning and torchmetrics (the package itself is taken from src/).
set -u
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "cpus: $(nproc)"
python3 -c "import torch, torchvision, lightning, torchmetrics; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'lightning', lightning.__version__, 'torchmetrics', torchmetrics.__version__)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_imagenet.py -k "not cli" 2>&1 | tail -4
timeout 330 python3 benchmarks/imagenet_pipeline.py --images 8000 --batch-sizes 128 256 --decode cpu cuda \
  --warmup 8 --steps 30 2>&1 | grep -v -i warn | tee "$OUT/imagenet_pipeline.log" | tail -45
for model in "alexnet --batch-size 256" "alexnet_cifar --batch-size 128"; do
  for layout in "" "--channels-last"; do
    # shellcheck disable=SC2086
    timeout 90 python3 benchmarks/throughput.py --model $model --precision bf16-mixed --steps 30 --repeats 2 $layout 2>&1 | tail -1
  done
done | tee "$OUT/throughput.log"
