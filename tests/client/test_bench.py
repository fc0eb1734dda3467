"""`cnnserve bench` against a real in-process server with a tiny model: counts, files, error codes.

Short fixed-duration runs; nothing here asserts on wall-clock figures, only on counts that must agree.
"""

from __future__ import annotations

import asyncio
import csv
import json

import numpy as np
import pytest

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve.cli import main
from cnnserve.client.bench import report
from cnnserve.client.bench.payload import InputSpec, build_requests, parse_inputs
from cnnserve.client.bench.runner import BenchConfig, run
from cnnserve.client.bench.stats import is_stable, stats_delta, summarise
from support import ROOT, ServerThread, write_model

SHORT = dict(processes=2, warmup_s=0.3, window_s=0.5, duration_s=1.0, timeout_s=20.0)


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("bench") / "models"
    write_model(repo, "tiny", max_batch_size=8, delay_us=1000)
    thread = ServerThread(repo).start()
    yield thread
    thread.stop()


def test_closed_loop_counts_agree_with_the_server(bench_server):
    cfg = BenchConfig(target=bench_server.address, model="tiny", concurrency=[3, 6], images_per_request=2, **SHORT)
    result = run(cfg)
    assert [lv["concurrency"] for lv in result["levels"]] == [3, 6]
    for level in result["levels"]:
        totals = level["totals"]
        assert totals["sent"] == totals["ok"] + totals["errors"]
        assert totals["errors"] == 0 and totals["ok"] > 0
        # every request the clients saw answered was run by the server, images counted one by one
        assert totals["server"]["inference_count"] == 2 * totals["ok"]
        assert totals["server"]["success"] == totals["ok"]
        assert sum(size * n for size, n in totals["server"]["batch_sizes"].items()) == 2 * totals["ok"]
        assert max(totals["server"]["batch_sizes"]) <= 8
        assert level["ok"] <= totals["ok"]
        assert level["images_per_s"] == pytest.approx(2 * level["requests_per_s"])
        assert set(level["latency_ms"]) == {"p50", "p90", "p95", "p99", "mean", "max"}
        lat = level["latency_ms"]
        assert lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_open_loop_poisson_counts(bench_server):
    cfg = BenchConfig(target=bench_server.address, model="tiny", rates=[40.0], arrival="poisson", **SHORT)
    level = run(cfg)["levels"][0]
    totals = level["totals"]
    assert totals["sent"] == totals["ok"] + totals["errors"] > 0
    assert totals["server"]["inference_count"] == totals["ok"]


def test_unknown_model_counts_not_found(bench_server):
    inputs = [InputSpec("images", "UINT8", (-1, 28, 28, 1))]
    cfg = BenchConfig(target=bench_server.address, model="nope", concurrency=[2], inputs=inputs, **SHORT)
    result = run(cfg)
    level = result["levels"][0]
    totals = level["totals"]
    assert totals["ok"] == 0
    assert totals["errors"] == totals["sent"] > 0
    assert totals["error_codes"] == {"NOT_FOUND": totals["sent"]}
    assert level["latency_ms"] is None
    assert result["server_statistics"] is False and level["server"] is None


def test_cli_writes_json_csv_and_plot(bench_server, tmp_path):
    out = tmp_path / "out"
    args = ["bench", "--server", bench_server.address, "--model", "tiny", "--concurrency", "2", "--quiet"]
    args += ["--warmup", "0.3", "--window", "0.5", "--duration", "1", "--label", "t1", "--output-dir", str(out)]
    assert main(args) == 0
    result = json.loads((out / "t1.json").read_text())
    level = result["levels"][0]
    assert result["label"] == "t1" and result["config"]["model"] == "tiny"
    with (out / "t1.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert int(rows[0]["sent_total"]) == level["totals"]["sent"]
    assert int(rows[0]["ok"]) == level["ok"]
    assert (out / "t1.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_reports_a_missing_model_without_a_traceback(bench_server, tmp_path, capsys):
    args = ["bench", "--server", bench_server.address, "--model", "nope", "--quiet", "--output-dir", str(tmp_path)]
    assert main(args) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


# --- units -------------------------------------------------------------------------------------------


def test_build_requests_are_valid_infer_requests():
    raw = build_requests("m", [InputSpec("images", "UINT8", (-1, 28, 28, 1))], 3, variants=2)
    assert len(raw) == 2
    msg = pb.ModelInferRequest.FromString(raw[0])
    assert msg.model_name == "m" and list(msg.inputs[0].shape) == [3, 28, 28, 1]
    assert len(msg.raw_input_contents[0]) == 3 * 28 * 28
    assert raw[0] != raw[1]


def test_parse_inputs():
    assert parse_inputs("images:uint8:-1x224x224x3") == [InputSpec("images", "UINT8", (-1, 224, 224, 3))]


def test_summarise_counts_errors_by_code_and_percentiles_of_successes():
    lats = np.array([0.001, 0.002, 0.003, 0.004, 5.0])
    codes = np.array([0, 0, 0, 0, 5], dtype=np.int16)  # 5 = NOT_FOUND
    s = summarise(lats, codes, 2.0, 4)
    assert s["ok"] == 4 and s["completed"] == 5 and s["errors"] == {"NOT_FOUND": 1}
    assert s["requests_per_s"] == 2.0 and s["images_per_s"] == 8.0
    assert s["latency_ms"]["max"] == pytest.approx(4.0)


def test_stats_delta_and_stability():
    before = {"inference_count": 10, "execution_count": 5, "success": 10, "fail": 0, "queue_ns": 0, "queue_count": 10}
    after = dict(before, inference_count=30, execution_count=7, success=20, queue_ns=20_000_000, queue_count=20)
    before["batches"] = {1: (5, 5_000_000)}
    after["batches"] = {1: (5, 5_000_000), 10: (2, 4_000_000)}
    d = stats_delta(before, after)
    assert d["batch_sizes"] == {10: 2} and d["mean_batch_size"] == 10.0
    assert d["mean_queue_ms"] == 2.0 and d["mean_infer_ms_per_execution"] == 2.0
    window = {"ok": 1, "requests_per_s": 100.0, "latency_ms": {"p95": 10.0}}
    assert is_stable([window] * 3, 3, 0.1)
    assert not is_stable([window, window, dict(window, requests_per_s=150.0)], 3, 0.1)
    assert not is_stable([window] * 2, 3, 0.1)


def test_plot_and_csv_of_several_runs(tmp_path):
    level = {
        "concurrency": 1,
        "stable": True,
        "seconds": 1.0,
        "requests_per_s": 10.0,
        "images_per_s": 10.0,
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p95": 2.0, "p99": 3.0, "mean": 1.0, "max": 4.0},
        "ok": 10,
        "errors": {},
        "server": None,
        "totals": {"sent": 10, "ok": 10, "errors": 0, "client_cpu_s": 0.1},
    }
    results = [{"label": name, "config": {"model": "m", "images_per_request": 1}, "levels": [level]} for name in "ab"]
    report.write_csv(results, tmp_path / "all.csv")
    assert len((tmp_path / "all.csv").read_text().splitlines()) == 3
    assert report.write_plot(results, tmp_path / "all.png").is_file()


def test_baseline_runner_states_each_target_from_its_own_figures():
    """benchmarks/run_baselines.py turns one run's figures into issue 5's verdicts (ratios, not absolutes)."""
    import importlib.util

    path = ROOT / "benchmarks" / "run_baselines.py"
    spec = importlib.util.spec_from_file_location("run_baselines", path)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)

    def level(rate, p99, batch=None):
        return {"requests_per_s": rate, "images_per_s": rate, "p99_ms": p99, "mean_batch": batch}

    summary = {
        "raw": {"vgg": {"1": {"images_per_s": 5.0}, "8": {"images_per_s": 6.0}}},
        "levels": {
            "null-asyncio": level(2000, 50),
            "cnnserve-batching-lenet5": level(1600, 80, 5),
            "cnnserve-batching-mnist_cnn": level(900, 90, 8),
            "cnnserve-nobatching-mnist_cnn": level(300, 150, 1),
            "cnnserve-batching-vgg": level(5.7, 2000, 4),
            "mlserver-mnist_cnn": level(400, 80),
        },
    }
    rows = {r["target"]: r for r in runner.targets(summary, "vgg")}
    assert rows["mnist_cnn c=64: batching / no batching"]["value"] == 3.0
    assert rows["mnist_cnn c=64: batching / no batching"]["met"]
    assert rows["vgg: served / raw onnxruntime images/s"]["value"] == 0.95  # against the best raw size
    assert (
        rows["lenet5: request rate / null handler"]["met"] and not rows["mnist_cnn: request rate / null handler"]["met"]
    )
    mls = rows["mnist_cnn: cnnserve / MLServer throughput, and a lower p99"]
    assert mls["value"] == 2.25 and not mls["met"]  # twice the throughput, but a higher p99
    assert "lenet5: cnnserve / MLServer throughput, and a lower p99" not in rows  # not measured: not stated
    assert "| **not met** |" in runner.targets_markdown(list(rows.values()))


@pytest.mark.parametrize("body", ["binary", "json"])
def test_http_closed_loop_counts_agree_with_the_server(bench_server, body):
    target = f"http://127.0.0.1:{bench_server.server.http_port}"
    cfg = BenchConfig(
        target=target, model="tiny", concurrency=[4], images_per_request=2, protocol="http", http_body=body, **SHORT
    )
    level = run(cfg)["levels"][0]
    totals = level["totals"]
    assert totals["sent"] == totals["ok"] + totals["errors"] and totals["errors"] == 0 and totals["ok"] > 0
    assert totals["server"]["inference_count"] == 2 * totals["ok"]


def test_http_open_loop_and_error_codes(bench_server):
    target = f"http://127.0.0.1:{bench_server.server.http_port}"
    level = run(BenchConfig(target=target, model="tiny", rates=[40.0], protocol="http", **SHORT))["levels"][0]
    assert level["totals"]["sent"] == level["totals"]["ok"] > 0
    inputs = [InputSpec("images", "UINT8", (-1, 28, 28, 1))]
    cfg = BenchConfig(target=target, model="nope", concurrency=[2], inputs=inputs, protocol="http", **SHORT)
    totals = run(cfg)["levels"][0]["totals"]
    assert totals["ok"] == 0 and totals["error_codes"] == {"HTTP_404": totals["sent"]}


def test_http_cli(bench_server, tmp_path):
    target = f"http://127.0.0.1:{bench_server.server.http_port}"
    code = main(["bench", "--server", target, "--model", "tiny", "--concurrency", "2", "--duration", "1",
                 "--warmup", "0.3", "--window", "0.5", "--output-dir", str(tmp_path), "--no-plot", "--quiet"])  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert result["config"]["protocol"] == "http" and result["levels"][0]["totals"]["ok"] > 0


def test_http_connection_reads_chunked_answers_and_stays_usable():
    """Peers (KServe's binary outputs) answer with Transfer-Encoding: chunked; the next answer must parse."""
    from cnnserve.client.bench.http import Connection

    body = b'{"outputs":[]}' + bytes(range(40))
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    answer += b"%x\r\n" % 5 + body[:5] + b"\r\n" + b"%x;ext=1\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n"
    seen = []

    async def handle(reader, writer):
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            seen.append(head.split(b" ")[1])
            writer.write(answer if len(seen) < 3 else b"HTTP/1.1 429 Too Many\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    async def scenario():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = Connection(f"http://127.0.0.1:{port}")
        request = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
        codes = [await connection.exchange(request, 5.0) for _ in range(3)]
        writer = connection.writer
        connection.close()
        server.close()
        await server.wait_closed()
        return codes, writer

    codes, writer = asyncio.run(scenario())
    assert codes == [0, 0, 1429]
    assert writer is not None and len(seen) == 3  # one keep-alive connection carried all three
