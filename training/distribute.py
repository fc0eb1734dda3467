"""``--distribute none|mirrored|multiworker``: TensorFlow's own engine for training past one device.

- ``none``: the default strategy (one device).
- ``mirrored``: ``tf.distribute.MirroredStrategy``, synchronous data parallelism across the GPUs of one
  machine (on a CPU-only machine: one replica on the CPU).
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` across machines; each worker runs the same
  ``cnnserve train`` command with its own ``TF_CONFIG`` (cluster addresses and this worker's task index).

No variant needs code for it: the model is built and compiled inside ``strategy.scope()`` and Keras'
``fit`` distributes the batches (the global batch is the variant's batch size).
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger(__name__)

STRATEGIES = ("none", "mirrored", "multiworker")


def make_strategy(kind: str = "none"):
    """The ``tf.distribute`` strategy named ``kind`` (create it before any other TensorFlow work)."""
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--distribute multiworker needs TF_CONFIG (cluster workers and this task's index)")
        task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
        log.info("Multi-worker training as %s %s", task.get("type"), task.get("index"))
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        raise ValueError(f"Unknown distribution strategy {kind!r}. Known: {', '.join(STRATEGIES)}")
    log.info("%s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy
