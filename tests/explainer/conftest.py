"""The sidecar's tests need TensorFlow (the [explainer] extra): without it they are not collected."""

from importlib.util import find_spec

collect_ignore_glob = [] if find_spec("tensorflow") and find_spec("keras") else ["test_*.py"]
