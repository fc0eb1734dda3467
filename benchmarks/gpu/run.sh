#!/usr/bin/env bash
# benchmarks/gpu/run.sh: the GPU measurements of issue 17 in one command (bench.py says what is measured).
#
# On the GPU machine, after benchmarks/gpu/prepare.sh here and its part-copying calls there:
#     bash benchmarks/gpu/run.sh --device cuda --out "$OUT"
# installs the carried wheels (.whl/) and onnxruntime-gpu (its parts in /tmp/ortw) into /tmp/site, checks
# that onnxruntime offers CUDA, then runs bench.py under a time limit that leaves a rerun inside the
# session's device time. Here, the same script end to end on the CPU with tiny models:
#     PYTHON=.venv/bin/python bash benchmarks/gpu/run.sh --device cpu --tiny --seconds 0.3 --out /tmp/gpu-proof
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
site=${CNNSERVE_GPU_SITE:-/tmp/site}
limit=${CNNSERVE_GPU_LIMIT_S:-390} # bench.py's own budget (--budget-s, default 330) ends first
out= device=cuda
for ((i = 1; i <= $#; i++)); do
  j=$((i + 1))
  [ "${!i}" = --out ] && out=${!j}
  [ "${!i}" = --device ] && device=${!j}
done
out=${out:-${OUT:-$root/gpu-bench-out}}
mkdir -p "$out"
exec > >(tee "$out/run.log") 2>&1
echo "run.sh $* ($(date -u +%FT%TZ), $(nproc) CPUs, python $($py -c 'import sys; print(sys.version.split()[0])'))"

# 1. The carried wheels and onnxruntime-gpu, into a folder of their own ahead of the image's packages
#    (on the GPU machine only: they are built for its Python 3.12).
if [ "$device" = cuda ] && ls "$root"/.whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$root"/.whl/*.whl
fi
if [ "$device" = cuda ] && ls /tmp/ortw/part-* >/dev/null 2>&1 && [ ! -d "$site/onnxruntime" ]; then
  whl=$(cat /tmp/ortw/wheel)
  cat /tmp/ortw/part-* >"/tmp/ortw/$whl"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "/tmp/ortw/$whl"
  rm -f "/tmp/ortw/$whl"
fi

# 2. cnnserve from this checkout without building it: its import layout (pyproject's package-dir) as links.
pkg=$(mktemp -d /tmp/cnnserve-pkg.XXXXXX)
mkdir -p "$pkg/cnnserve"
for f in "$root"/cnnserve/*; do ln -s "$f" "$pkg/cnnserve/"; done
for part in server client training export explainer; do ln -s "$root/$part" "$pkg/cnnserve/$part"; done
if [ "$device" = cuda ]; then export PYTHONPATH="$site:$pkg${PYTHONPATH:+:$PYTHONPATH}"; else export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"; fi
export PYTHONUNBUFFERED=1

"$py" - <<'PY'
import onnxruntime as ort, cnnserve.server.runtime as rt
print("onnxruntime", ort.__version__, ort.get_available_providers(), "from", ort.__file__)
print("cnnserve from", rt.__file__)
PY
if [ "$device" = cuda ]; then
  # CUDA 13 and cuDNN 9 from the image's nvidia-* wheels (PyTorch's), for the server process too, which does
  # not import torch; onnxruntime.preload_dlls() looks for them as well.
  nvlibs=$("$py" -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + "/*/lib/lib*.so*")})))' 2>/dev/null || true)
  [ -n "$nvlibs" ] && export LD_LIBRARY_PATH="$nvlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "nvidia libraries: ${nvlibs:-none found}"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c 'import onnxruntime as o, sys; sys.exit(0 if "CUDAExecutionProvider" in o.get_available_providers() else "onnxruntime offers no CUDA provider: were the onnxruntime-gpu parts copied to /tmp/ortw?")'
fi

# 3. The measurements: SIGINT at the limit, so bench.py still writes what it has.
set +e
timeout --signal=INT --kill-after=30 "$limit" "$py" "$root/benchmarks/gpu/bench.py" "$@"
rc=$?
rm -rf "$pkg"
echo "bench.py exit status $rc; files in $out:"
ls -l "$out"
exit $rc
