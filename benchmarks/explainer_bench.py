"""Explainer speed on VGG16 (random weights: the same cost as ImageNet weights), ours against tf-keras-vis.

    .venv/bin/python benchmarks/explainer_bench.py [--repeats 5] [--json out.json]

Grad-CAM on block5_conv3 at batch 1 and 8 (224x224x3; per-image latency, best of the repeats, ours and
tf-keras-vis alternately, after one warm-up call each; at batch 8 also ours with the overlay PNGs the
Heatmap RPC returns), then filter patterns (the reference's recipe: block4_conv2, 50x50, 50 steps) for 8 filters
as one batch and one filter alone. tf-keras-vis does the same work in the same process when installed:
Gradcam with ReplaceToLinear on the same model (upsampled and normalised, as ours), and
ActivationMaximization with plain SGD(0.9), no input modifiers or regularisers, 50 steps.
Not a test: it prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _best_of(repeats: int, ours, theirs=None) -> tuple[float, float | None]:
    """Best-of-``repeats`` seconds for ``ours`` and ``theirs``, run alternately after one warm-up call each,
    so that load from other processes on a shared machine hits both alike (the minimum is the least
    disturbed run)."""
    ours()
    if theirs is not None:
        theirs()
    a, b = [], []
    for _ in range(repeats):
        a.append(_timed(ours))
        if theirs is not None:
            b.append(_timed(theirs))
    return min(a), (min(b) if b else None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from cnnserve.explainer import cams, patterns
    from cnnserve.explainer.graph import ExplainableModel
    from cnnserve.explainer.render import overlay_png

    try:
        from tf_keras_vis.activation_maximization import ActivationMaximization
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
        from tf_keras_vis.utils.scores import CategoricalScore

        have_vis = True
    except ImportError:
        have_vis = False

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, float, float | None]] = []

    vgg = keras.applications.VGG16(weights=None)
    ours = ExplainableModel(vgg)
    vis = Gradcam(vgg, model_modifier=ReplaceToLinear(), clone=True) if have_vis else None
    for batch in (1, 8):
        x = rng.integers(0, 256, size=(batch, 224, 224, 3)).astype(np.float32)
        targets = cams.heatmaps(ours, x, "block5_conv3").target
        theirs = None
        if vis is not None:
            score = CategoricalScore([int(t) for t in targets])

            def theirs(x=x, s=score):
                return vis(s, x, penultimate_layer="block5_conv3")

        t_ours, t_vis = _best_of(args.repeats, lambda x=x: cams.heatmaps(ours, x, "block5_conv3", "gradcam"), theirs)
        work = f"Grad-CAM, VGG16 block5_conv3, batch {batch}"
        rows.append((work, "per image", t_ours / batch, t_vis and t_vis / batch))
        if batch > 1:  # what the Heatmap RPC adds per image: the JET overlay and its PNG (no tf-keras-vis peer)
            pixels = x.astype(np.uint8)

            def with_overlays(x=x, pixels=pixels):
                maps = cams.heatmaps(ours, x, "block5_conv3", "gradcam").heatmaps
                return [overlay_png(pixels[i], maps[i]) for i in range(len(maps))]

            t_full, _ = _best_of(args.repeats, with_overlays)
            rows.append((f"{work}, with overlay PNGs", "per image", t_full / batch, None))

    conv = keras.applications.VGG16(weights=None, include_top=False, input_shape=(50, 50, 3))
    ours_conv = ExplainableModel(conv)
    layer, steps = "block4_conv2", 50
    params = patterns.PatternParams(steps=steps, step_size=0.9, size=50)
    filters = list(range(8))
    run_vis = None
    if have_vis:
        sub = keras.Model(conv.inputs, conv.get_layer(layer).output)
        am = ActivationMaximization(sub, clone=False)

        def run_vis(fs):
            def score(output):
                return tf.stack([tf.reduce_mean(output[i, :, :, f]) for i, f in enumerate(fs)])

            seed = tf.random.uniform((len(fs), 50, 50, 3), 0, 1)
            return am(
                score,
                seed_input=seed,
                input_range=(None, None),
                input_modifiers=[],
                regularizers=[],
                steps=steps,
                optimizer=keras.optimizers.SGD(0.9),
            )

    few = max(1, args.repeats // 2)
    t_batch, vis_batch = _best_of(
        few, lambda: patterns.ascend(ours_conv, layer, filters, params), run_vis and (lambda: run_vis(filters))
    )
    t_one, vis_one = _best_of(
        few, lambda: patterns.ascend(ours_conv, layer, [0], params), run_vis and (lambda: run_vis([0]))
    )
    work = f"Filter pattern, {layer} 50x50, {steps} steps"
    rows.append((f"{work}, 8 filters in one batch", "per filter", t_batch / 8, vis_batch and vis_batch / 8))
    rows.append((f"{work}, 1 filter", "per filter", t_one, vis_one))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores ({cpu}), "
        f"tf-keras-vis {'installed' if have_vis else 'not installed'}, load average at the end {load:.1f}"
    )
    print("\n| Work | Unit | cnnserve explainer | tf-keras-vis | Speed-up |")
    print("|---|---|---:|---:|---:|")
    for work, unit, ours_s, vis_s in rows:
        vis_txt = f"{vis_s * 1000:.0f} ms" if vis_s else "n/a"
        ratio = f"{vis_s / ours_s:.2f}x" if vis_s else "n/a"
        print(f"| {work} | {unit} | {ours_s * 1000:.0f} ms | {vis_txt} | {ratio} |")
    if args.json:
        keys = ("work", "unit", "ours_s", "tf_keras_vis_s")
        with open(args.json, "w") as fh:
            json.dump([dict(zip(keys, r, strict=True)) for r in rows], fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
