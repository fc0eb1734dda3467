"""The explainer sidecar: TensorFlow-backed heatmaps, activation maps and filter patterns over gRPC.

Only `cli.py`, `render.py`, `settings.py` and `convert.py` may be imported without TensorFlow.
"""
