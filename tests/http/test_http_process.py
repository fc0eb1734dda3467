"""`cnnserve serve` as a real process: the ready line names the HTTP port; SIGTERM drains HTTP requests too."""

from __future__ import annotations

import concurrent.futures

from support import Http, ServerProcess, wait_until, write_model


def _body(n: int = 1) -> dict:
    return {"inputs": [{"name": "images", "shape": [n, 28, 28, 1], "datatype": "UINT8", "data": [0] * (784 * n)}]}


def test_ready_line_names_the_http_port_and_sigterm_finishes_http_requests(tmp_path):
    write_model(tmp_path, "m", max_batch_size=64, delay_us=2_000_000)  # requests wait 2 s in the window
    server = ServerProcess(tmp_path, "--grace-seconds", "20").start()
    try:
        port = server.ready["http_port"]
        assert port > 0
        with Http(port) as http:
            assert http.call("GET", "/v2/health/ready")[0] == 200
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [
                pool.submit(lambda: Http(port, timeout=60).json("POST", "/v2/models/m/infer", _body()))
                for _ in range(3)
            ]
            with Http(port) as http:
                wait_until(
                    lambda: (
                        http.json("GET", "/v2/models/m/stats")[1]["model_stats"][0]["queue_depth"] == 3
                        or _queued(server.metrics_port) == 3
                    ),
                    "three HTTP requests queued",
                )
            server.proc.send_signal(15)
            answers = [f.result(60) for f in futures]
        assert all(status == 200 and a["outputs"][0]["shape"] == [1, 10] for status, a in answers)
        assert server.proc.wait(30) == 0
    finally:
        if server.proc.poll() is None:
            server.kill()


def _queued(metrics_port: int) -> int:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith('cnnserve_queue_samples{model="m",version="1"}'):
            return int(float(line.split()[-1]))
    return 0


def test_no_http_with_minus_one(tmp_path):
    write_model(tmp_path, "m")
    server = ServerProcess(tmp_path, "--http-port", "-1").start()
    try:
        assert server.ready["http_port"] == -1
    finally:
        server.terminate()
