# cnnserve server on NVIDIA GPUs: onnxruntime-gpu (CUDA execution provider) on a CUDA + cuDNN runtime base.
# Not built by `make compose-test` (no GPU, no CUDA base image on the CI machine); see docs/deployment.md.
#   docker build -f docker/server-gpu.Dockerfile -t cnnserve-server-gpu .
#   docker run --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD/models:/models:ro" cnnserve-server-gpu
# onnxruntime-gpu 1.31.x links CUDA 13 (libcublas.so.13, libcudart.so.13) and loads cuDNN 9 at run time, which
# this base carries; the host needs an NVIDIA driver for CUDA 13 (>= 580) and the NVIDIA Container Toolkit.
# onnxruntime-gpu has no 1.32.0 release yet: 1.31.1 replaces the CPU package's 1.32.0 pin (same Python API).
# It starts with CNNSERVE_DEVICE=cuda and refuses to start without a usable GPU
# (CNNSERVE_ALLOW_CPU_FALLBACK=true starts on the CPU instead).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG ORT_GPU_VERSION=1.31.1

FROM ${CUDA_IMAGE} AS build
ARG ORT_GPU_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml docker/requirements.py docker/constraints.txt ./
# The server's dependencies without the CPU onnxruntime (both wheels install the same `onnxruntime` module).
RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py pyproject.toml --without onnxruntime >requirements.txt \
 && pip install -c constraints.txt -r requirements.txt "onnxruntime-gpu==${ORT_GPU_VERSION}"

# The project itself as a wheel, in a stage of its own: a code change rebuilds this and one small layer of the
# final image, never the dependency layers above.
FROM build AS wheel
COPY README.md ./
COPY cnnserve cnnserve
COPY client client
COPY server server
COPY explainer explainer
COPY training training
COPY export export
RUN --mount=type=cache,target=/root/.cache/pip pip wheel --no-deps --wheel-dir /wheels .

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group cnnserve \
 && mkdir /models && chown cnnserve:cnnserve /models
COPY --from=build /opt/venv /opt/venv
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-deps --no-cache-dir /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && /opt/venv/bin/cnnserve --help >/dev/null \
 && /opt/venv/bin/python -I -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CNNSERVE_MODEL_REPOSITORY=/models CNNSERVE_HTTP_PORT=8000 CNNSERVE_GRPC_PORT=8001 CNNSERVE_METRICS_PORT=8002 CNNSERVE_DEVICE=cuda
USER 10001:10001
WORKDIR /home/cnnserve
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "cnnserve.healthcheck", "--quiet", "http://127.0.0.1:8000"]
ENTRYPOINT ["cnnserve"]
CMD ["serve"]
