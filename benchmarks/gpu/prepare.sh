#!/usr/bin/env bash
# benchmarks/gpu/prepare.sh: run HERE (the checkout the device tool sends), before the GPU calls.
#
# The GPU machine's image (Python 3.12, PyTorch, onnx, a CPU-only onnxruntime 1.30, no network) lacks what
# `cnnserve serve` needs besides: the small wheels go to .whl/ (one carry), and onnxruntime-gpu (CUDA 13,
# ~256 MB, over the 64 MiB a call may carry) is split into parts under .ort-gpu/, one call each. Both folders
# are ignored through git's info/exclude (a worktree's too). Then it prints the device calls, in order.
# As ../shared/tools/ort-gpu-chunks.sh does, with larger parts (fewer calls) and the worktree-safe exclude.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
ort=${1:-1.31.1}
part_size=${PART_SIZE:-56M}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for d in /.whl/ /.ort-gpu/; do grep -qx "$d" "$exclude" 2>/dev/null || echo "$d" >>"$exclude"; done
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" "$@"; }
# What the image lacks or has in another version than the server is pinned to (pyproject.toml; the versions
# this project's venv runs): pydantic and its settings, gRPC's health and reflection services, protobuf 6,
# the HTTP front door's uvicorn, httptools and orjson.
rm -rf .whl && mkdir -p .whl
get -d .whl pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing-extensions==4.16.0 python-dotenv==1.2.4 grpcio==1.85.1 \
  grpcio-health-checking==1.81.1 grpcio-reflection==1.81.1 protobuf==6.33.6 prometheus-client==0.26.0 \
  uvicorn==0.55.0 httptools==0.9.0 orjson==3.13.0
mkdir -p .ort-gpu
if ! ls .ort-gpu/part-* >/dev/null 2>&1 || [ "$(cat .ort-gpu/version 2>/dev/null)" != "$ort" ]; then
  rm -f .ort-gpu/*
  get -d .ort-gpu "onnxruntime-gpu==$ort"
  whl=$(cd .ort-gpu && ls onnxruntime_gpu-"$ort"-*.whl | head -n 1)
  (cd .ort-gpu && split -b "$part_size" -d "$whl" part- && rm -f "$whl" && echo "$whl" >wheel && echo "$ort" >version)
fi
parts=(.ort-gpu/part-*)
echo "small wheels: $(du -sh .whl | cut -f1) in .whl/; onnxruntime-gpu $ort: ${#parts[@]} parts of $part_size"
echo
echo "Device calls, one after the other (the machine goes back after 30 s idle: make each call at once):"
n=${#parts[@]}
for ((i = 0; i < n - 1; i++)); do
  echo "  run(command='mkdir -p /tmp/ortw && cp ${parts[$i]} .ort-gpu/wheel /tmp/ortw/ && ls -l /tmp/ortw',"
  echo "      carry=['${parts[$i]}', '.ort-gpu/wheel'], timeout_s=120)"
done
echo "  run(command='mkdir -p /tmp/ortw && cp ${parts[$((n - 1))]} .ort-gpu/wheel /tmp/ortw/ && bash benchmarks/gpu/run.sh --device cuda --out \$OUT',"
echo "      carry=['${parts[$((n - 1))]}', '.ort-gpu/wheel', '.whl'], timeout_s=450)"
