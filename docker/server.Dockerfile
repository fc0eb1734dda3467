# cnnserve server: onnxruntime + gRPC, never TensorFlow (`pip install cnnserve`, no extra).
#   docker build -f docker/server.Dockerfile -t cnnserve-server .
#   docker run -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD/models:/models:ro" cnnserve-server
# Every `cnnserve serve` option is also an environment variable CNNSERVE_<NAME> (server/settings.py).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml's pins and the frozen constraints: this layer is rebuilt only when
# those files change, never for a code change. The pip cache mount is shared by the images' builds.
COPY pyproject.toml docker/requirements.py docker/constraints.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py pyproject.toml >requirements.txt \
 && pip install -c constraints.txt -r requirements.txt

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

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 --user-group cnnserve \
 && mkdir /models && chown cnnserve:cnnserve /models
COPY --from=build /opt/venv /opt/venv
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-deps --no-cache-dir /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && /opt/venv/bin/cnnserve --help >/dev/null \
 && /opt/venv/bin/python -I -c "import sys, cnnserve.server.app; assert 'tensorflow' not in sys.modules"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    CNNSERVE_MODEL_REPOSITORY=/models CNNSERVE_HTTP_PORT=8000 CNNSERVE_GRPC_PORT=8001 CNNSERVE_METRICS_PORT=8002
USER 10001:10001
WORKDIR /home/cnnserve
EXPOSE 8000 8001 8002
# The standard grpc.health.v1 service: SERVING once every model is loaded and warmed up.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "cnnserve.healthcheck", "--quiet", "http://127.0.0.1:8000"]
ENTRYPOINT ["cnnserve"]
CMD ["serve"]
