# cnnserve explainer: the TensorFlow sidecar (`pip install 'cnnserve[explainer]'`) for Grad-CAM,
# activation maps and filter patterns. It reads the model.keras files of the same model repository.
#   docker build -f docker/explainer.Dockerfile -t cnnserve-explainer .
# Settings: `cnnserve explainer` options or CNNSERVE_EXPLAINER_<NAME> (explainer/settings.py).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml docker/requirements.py docker/constraints.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py pyproject.toml explainer >requirements.txt \
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
 && /opt/venv/bin/cnnserve --help >/dev/null
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 \
    CNNSERVE_EXPLAINER_MODEL_REPOSITORY=/models CNNSERVE_EXPLAINER_GRPC_PORT=8011
USER 10001:10001
WORKDIR /home/cnnserve
EXPOSE 8011
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "cnnserve.healthcheck", "--quiet", "127.0.0.1:8011"]
ENTRYPOINT ["cnnserve"]
CMD ["explainer"]
