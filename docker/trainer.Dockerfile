# cnnserve trainer: one-shot job that trains the default models on the bundled digits, exports them to
# ONNX with the parity check, and installs them into the model repository at /models
# (`pip install 'cnnserve[train]'`). Settings (docker/trainer.sh):
#   CNNSERVE_TRAIN_MODELS   variants to train (default "mnist_cnn lenet5"; "none": train nothing)
#   CNNSERVE_TRAIN_EPOCHS   epochs (default: each variant's own)   CNNSERVE_TRAIN_LIMIT  train on N digits
#   CNNSERVE_TRAIN_FORCE=1  retrain models already in the repository (default: keep them)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml docker/requirements.py docker/constraints.txt ./
# The explainer image's dependency layer, instruction for instruction, so the two images share TensorFlow's
# layer in the build cache (a cache mount alone does not persist between builds on every engine); then the
# training extras on top.
RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py pyproject.toml explainer >requirements.txt \
 && pip install -c constraints.txt -r requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py pyproject.toml train >requirements-train.txt \
 && pip install -c constraints.txt -r requirements-train.txt

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
WORKDIR /home/cnnserve
# Training reads data/mnist-8k.npz relative to the working directory, as in the repository.
COPY --chown=cnnserve:cnnserve data/mnist-8k.npz data/mnist-8k.LICENSE data/
COPY docker/trainer.sh /usr/local/bin/cnnserve-trainer
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 CNNSERVE_MODEL_REPOSITORY=/models
USER 10001:10001
ENTRYPOINT ["cnnserve-trainer"]
