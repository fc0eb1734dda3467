"""The explainer sidecar: TensorFlow-backed heatmaps, activation maps and filter patterns over gRPC.

Only `cli.py`, `render.py` and `settings.py` may be imported without TensorFlow.
"""
