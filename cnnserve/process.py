"""Starting `cnnserve serve` / `cnnserve explainer` as child processes and waiting for their ready line.

Both commands print one JSON line, ``{"event": "ready", "grpc_port": N, ...}``, on stdout once they serve;
scripts, benchmarks and tests that bind port 0 learn the ports from it.
"""

from __future__ import annotations

import json
import subprocess
import time


def wait_ready(proc: subprocess.Popen, timeout: float = 300.0) -> dict:
    """Read ``proc``'s stdout (text mode) until its ready line; return the event. Raises if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"{' '.join(map(str, proc.args[1:4]))} exited with status {proc.wait()} before it was ready"
            )
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "ready":
                return event
    raise TimeoutError(f"no ready line within {timeout:.0f} s")
