#!/bin/sh
# Entry point of the trainer image: train and export each model of CNNSERVE_TRAIN_MODELS into the model
# repository CNNSERVE_MODEL_REPOSITORY (the `models` volume). Models already there are kept unless
# CNNSERVE_TRAIN_FORCE=1, so `docker compose up` after the first time starts in seconds.
#
# The export writes into a repository inside the container first, then each finished model is moved into
# the volume with a rename on the volume's own filesystem: the exporter stages beside its repository, and
# the parent of a mount point is neither writable by this user nor on the same filesystem.
set -eu
repo=${CNNSERVE_MODEL_REPOSITORY:-/models}
models=${CNNSERVE_TRAIN_MODELS:-mnist_cnn lenet5}
work=$(mktemp -d /tmp/cnnserve-train.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ "$models" = none ]; then
  echo "trainer: CNNSERVE_TRAIN_MODELS=none, nothing to train"
  exit 0
fi
for name in $models; do
  if [ -f "$repo/$name/config.pbtxt" ] && [ "${CNNSERVE_TRAIN_FORCE:-0}" != 1 ]; then
    echo "trainer: $name is already in $repo; keeping it (CNNSERVE_TRAIN_FORCE=1 retrains)"
    continue
  fi
  set -- --output-dir "$work/artifacts"
  [ -n "${CNNSERVE_TRAIN_EPOCHS:-}" ] && set -- "$@" --epochs "$CNNSERVE_TRAIN_EPOCHS"
  [ -n "${CNNSERVE_TRAIN_LIMIT:-}" ] && set -- "$@" --limit "$CNNSERVE_TRAIN_LIMIT"
  echo "trainer: cnnserve train $name $*"
  cnnserve train "$name" "$@"
  cnnserve export "$name" --artifacts "$work/artifacts" --model-repository "$work/models"
  rm -rf "$repo/.incoming-$name" "$repo/.old-$name"
  cp -R "$work/models/$name" "$repo/.incoming-$name"
  [ -d "$repo/$name" ] && mv "$repo/$name" "$repo/.old-$name"
  mv "$repo/.incoming-$name" "$repo/$name"
  rm -rf "$repo/.old-$name"
  echo "trainer: $name installed in $repo/$name"
done
echo "trainer: done; $repo holds: $(ls "$repo" | tr '\n' ' ')"
