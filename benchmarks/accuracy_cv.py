"""k-fold cross-validation of the MNIST training recipes inside the bundled 8,000 digits (issue 16).

Every run trains one variant with one recipe on k-1 folds of ``data/mnist-8k.npz`` and classifies the
remaining fold (digits that run never saw); the reference layers are the registry's, only the recipe
(augmentation, schedule, label smoothing, batch size, epochs) changes. The folds are stratified and fixed
(``CV_SPLIT_SEED``), independent of the training seed, so recipes are compared on the same digits.

    # one run per (fold, seed), appended as a JSON line to --out:
    nice -n 15 .venv/bin/python benchmarks/accuracy_cv.py run --variant mnist_cnn --recipe registry \\
        --folds 0 1 2 3 4 --seeds 0 --out /tmp/acc/cv.jsonl
    # the table (per fold and seed, mean, sample sd, min, max) of every run in the files:
    .venv/bin/python benchmarks/accuracy_cv.py table /tmp/acc/cv.jsonl

``--recipe previous`` is the recipe before issue 16 (written out here so it stays reproducible);
``--recipe registry`` is what ``cnnserve train`` uses now; the other names are the candidates screened.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "mnist-8k.npz"
CV_SPLIT_SEED = 1234
"""Seed of the fold assignment; not the project's held-out split seed (0), not a training seed."""


def stratified_folds(y: np.ndarray, k: int, seed: int = CV_SPLIT_SEED) -> np.ndarray:
    """Fold number (0..k-1) of every sample: per class, a seeded permutation dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def recipes() -> dict[str, dict[str, dict]]:
    """recipe name -> variant name -> Variant fields it overrides (empty: the registry's settings)."""
    from cnnserve.training import registry as r

    light = r.Augmentation(max_shift=0.08, max_rotation=0.025, max_zoom=0.08)
    elastic = r.Augmentation(
        max_shift=0.08, max_rotation=0.03, max_zoom=0.1, max_shear=0.15, elastic_alpha=34.0, elastic_sigma=4.0
    )
    affine = dataclasses.replace(elastic, elastic_alpha=0.0, numpy_sampler=True)
    cnn = dict(batch_size=64, label_smoothing=0.1, optimizer=r._adam_cosine_to_zero, epochs=24)
    lenet = dict(batch_size=32, label_smoothing=0.1, optimizer=r._sgd_momentum_cosine, epochs=60)
    return {
        "registry": {"mnist_cnn": {}, "lenet5": {}},
        "previous": {
            "mnist_cnn": dict(
                augmentation=light, epochs=18, batch_size=64, label_smoothing=0.0, optimizer=r._adam_cosine
            ),
            "lenet5": dict(
                augmentation=light, epochs=40, batch_size=32, label_smoothing=0.0, optimizer=r._sgd_momentum_cosine
            ),
        },
        # The candidates: stronger affine jitter (+ shear), label smoothing .1, longer; with or without elastic.
        "elastic": {"mnist_cnn": dict(cnn, augmentation=elastic), "lenet5": dict(lenet, augmentation=elastic)},
        "affine": {"mnist_cnn": dict(cnn, augmentation=affine), "lenet5": dict(lenet, augmentation=affine)},
    }


def recipe_variant(variant: str, recipe: str):
    from cnnserve.training.registry import get_variant

    overrides = recipes()[recipe]
    if variant not in overrides:
        raise SystemExit(f"recipe {recipe!r} has no settings for {variant}")
    return dataclasses.replace(get_variant(variant), **overrides[variant])


def describe(v) -> dict:
    return {
        "epochs": v.epochs,
        "batch_size": v.batch_size,
        "label_smoothing": v.label_smoothing,
        "optimizer": v.optimizer.__name__,
        "augmentation": dataclasses.asdict(v.augmentation),
    }


def run_one(variant_name: str, recipe: str, fold: int, k: int, seed: int, epochs: int | None) -> dict:
    """Train on the other folds, classify ``fold``; the fold's accuracy and how the run went."""
    import keras

    from cnnserve.training.augment import train_dataset
    from cnnserve.training.data import load_mnist
    from cnnserve.training.train import seed_everything, training_loss

    v = recipe_variant(variant_name, recipe)
    if epochs is not None:
        v = dataclasses.replace(v, epochs=epochs)
    data = load_mnist(DATA)
    folds = stratified_folds(data.y, k)
    train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    seed_everything(seed)
    loss, one_hot = training_loss(v)
    model = v.make_model()
    steps = v.epochs * -(-len(train) // v.batch_size)
    model.compile(optimizer=v.optimizer(steps), loss=loss, metrics=["accuracy"])
    y_fit = np.eye(v.num_classes, dtype=np.float32)[data.y[train]] if one_hot else data.y[train]
    ds = train_dataset(data.x[train], y_fit, v.batch_size, v.augmentation, seed)
    started = time.monotonic()
    history = model.fit(ds, epochs=v.epochs, verbose=0, shuffle=False, callbacks=[_EpochLog()])
    seconds = time.monotonic() - started
    pred = model.predict(data.x[test], batch_size=256, verbose=0).argmax(axis=1)
    correct = int((pred == data.y[test]).sum())
    keras.backend.clear_session()
    return {
        "variant": variant_name,
        "recipe": recipe,
        "k": k,
        "fold": fold,
        "seed": seed,
        "count": int(len(test)),
        "correct": correct,
        "accuracy": correct / len(test),
        "train_count": int(len(train)),
        "train_seconds": round(seconds, 1),
        "final_train_loss": float(history.history["loss"][-1]),
        "recipe_settings": describe(v),
        "cv_split_seed": CV_SPLIT_SEED,
    }


class _EpochLog:
    """Keras callback printing one line per epoch (a long run shows progress in its log)."""

    def __new__(cls):
        import keras

        class EpochLog(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                print(f"  epoch {epoch + 1}: loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f}",
                      flush=True)  # fmt: skip

        return EpochLog()


def table(paths: list[Path]) -> str:
    """Markdown: per variant and recipe, the accuracy of every (fold, seed), then mean, sd, min, max."""
    rows = [json.loads(line) for p in paths for line in p.read_text().splitlines() if line.strip()]
    groups: dict[tuple, dict] = defaultdict(dict)
    for row in rows:  # a rerun of the same (fold, seed) replaces the earlier line
        groups[(row["variant"], row["recipe"], row["k"])][(row["fold"], row["seed"])] = row
    out = []
    for (variant, recipe, k), runs in sorted(groups.items()):
        seeds = sorted({s for _, s in runs})
        sizes = sorted({r["count"] for r in runs.values()})
        out.append(f"\n{variant}, recipe `{recipe}`, {k}-fold (accuracy in % on the left-out fold, "
                   f"{sizes[0]}-{sizes[-1]} digits):\n")  # fmt: skip
        out.append("| seed | " + " | ".join(f"fold {f}" for f in range(k)) + " | mean |")
        out.append("|---" * (k + 2) + "|")
        for s in seeds:
            cells = [f"{runs[(f, s)]['accuracy'] * 100:.2f}" if (f, s) in runs else "–" for f in range(k)]
            accs = [runs[(f, s)]["accuracy"] * 100 for f in range(k) if (f, s) in runs]
            out.append(f"| {s} | " + " | ".join(cells) + f" | {statistics.mean(accs):.2f} |")
        accs = [r["accuracy"] * 100 for r in runs.values()]
        pooled = sum(r["correct"] for r in runs.values()) / sum(r["count"] for r in runs.values()) * 100
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        secs = statistics.mean(r["train_seconds"] for r in runs.values())
        out.append(
            f"\n{len(accs)} runs: mean {statistics.mean(accs):.2f} %, sd {sd:.2f} (over runs), min {min(accs):.2f}, "
            f"max {max(accs):.2f}; pooled {pooled:.2f} % of {sum(r['count'] for r in runs.values())} "
            f"classifications; mean training time {secs:.0f} s"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and score (fold, seed) runs, one JSON line each")
    run.add_argument("--variant", required=True, choices=("mnist_cnn", "lenet5"))
    run.add_argument("--recipe", default="registry")
    run.add_argument("--k", type=int, default=5)
    run.add_argument("--folds", type=int, nargs="+", default=None, help="default: all k")
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (screening)")
    run.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    run.add_argument("--out", type=Path, default=Path("/tmp/acc/cv.jsonl"))
    tab = sub.add_parser("table", help="the markdown table of the runs in FILES")
    tab.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "table":
        print(table(args.files))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for fold in args.folds if args.folds is not None else range(args.k):
            print(f"{args.variant} {args.recipe} fold {fold}/{args.k} seed {seed}", flush=True)
            row = run_one(args.variant, args.recipe, fold, args.k, seed, args.epochs)
            if args.epochs is not None:
                row["recipe"] = f"{args.recipe}@{args.epochs}ep"
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"-> {row['accuracy'] * 100:.2f} % ({row['correct']}/{row['count']}), {row['train_seconds']} s",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
