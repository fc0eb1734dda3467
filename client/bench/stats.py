"""Summaries: latency percentiles and throughput of a window, deltas of the server's ModelStatistics."""

from __future__ import annotations

import grpc
import numpy as np

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc
from cnnserve.client.bench.http import HTTP_BASE
from cnnserve.client.bench.worker import CLIENT_ERROR

PERCENTILES = (50, 90, 95, 99)


def code_name(code: int) -> str:
    if code == CLIENT_ERROR:
        return "CLIENT_ERROR"
    if code >= HTTP_BASE:  # an HTTP answer other than 200 (HTTP_BASE itself: no answer, connection failed)
        return f"HTTP_{code - HTTP_BASE}" if code > HTTP_BASE else "HTTP_CONNECTION_FAILED"
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return f"CODE_{code}"


def summarise(lats: np.ndarray, codes: np.ndarray, seconds: float, images_per_request: int) -> dict:
    """Throughput of successful requests and latency percentiles (ms) of successful requests."""
    ok = lats[codes == 0]
    errors: dict[str, int] = {}
    for code, count in zip(*np.unique(codes[codes != 0], return_counts=True), strict=True):
        errors[code_name(int(code))] = int(count)
    out = {
        "seconds": round(seconds, 3),
        "completed": int(len(codes)),
        "ok": int(len(ok)),
        "errors": errors,
        "requests_per_s": len(ok) / seconds if seconds > 0 else 0.0,
        "images_per_s": len(ok) * images_per_request / seconds if seconds > 0 else 0.0,
        "latency_ms": None,
    }
    if len(ok):
        values = np.percentile(ok, PERCENTILES) * 1e3
        out["latency_ms"] = {f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, values, strict=True)}
        out["latency_ms"]["mean"] = round(float(ok.mean() * 1e3), 3)
        out["latency_ms"]["max"] = round(float(ok.max() * 1e3), 3)
    return out


class ServerStats:
    """Reads ModelStatistics for one model; ``None`` snapshots where the server does not implement it."""

    def __init__(self, channel: grpc.Channel, model: str, version: str = "") -> None:
        self.stub = pb_grpc.GRPCInferenceServiceStub(channel)
        self.model, self.version = model, version
        self.available = True

    def snapshot(self) -> dict | None:
        if not self.available:
            return None
        try:
            response = self.stub.ModelStatistics(
                pb.ModelStatisticsRequest(name=self.model, version=self.version), timeout=5
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
                self.available = False  # e.g. MLServer, or an unknown model: no server-side figures
                return None
            raise
        if not response.model_stats:
            return None
        s = response.model_stats[0]
        return {
            "inference_count": s.inference_count,
            "execution_count": s.execution_count,
            "success": s.inference_stats.success.count,
            "fail": s.inference_stats.fail.count,
            "queue_ns": s.inference_stats.queue.ns,
            "queue_count": s.inference_stats.queue.count,
            "batches": {b.batch_size: (b.compute_infer.count, b.compute_infer.ns) for b in s.batch_stats},
        }


def stats_delta(before: dict | None, after: dict | None) -> dict | None:
    """What the server did between two snapshots: counts, batch-size histogram, mean queue and infer times."""
    if before is None or after is None:
        return None
    batches = {}
    infer_ns = 0
    for size, (count, ns) in after["batches"].items():
        c0, n0 = before["batches"].get(size, (0, 0))
        if count - c0:
            batches[int(size)] = count - c0
            infer_ns += ns - n0
    executions = after["execution_count"] - before["execution_count"]
    inferences = after["inference_count"] - before["inference_count"]
    queued = after["queue_count"] - before["queue_count"]
    return {
        "inference_count": inferences,
        "execution_count": executions,
        "success": after["success"] - before["success"],
        "fail": after["fail"] - before["fail"],
        "mean_batch_size": round(inferences / executions, 3) if executions else None,
        "batch_sizes": dict(sorted(batches.items())),
        "mean_queue_ms": round((after["queue_ns"] - before["queue_ns"]) / queued / 1e6, 3) if queued else None,
        "mean_infer_ms_per_execution": round(infer_ns / executions / 1e6, 3) if executions else None,
    }


def is_stable(windows: list[dict], count: int, tolerance: float) -> bool:
    """The last ``count`` windows agree within ``tolerance`` (a fraction) on throughput and p95 latency."""
    if len(windows) < count:
        return False
    last = windows[-count:]
    if any(w["latency_ms"] is None or w["ok"] == 0 for w in last):
        return False
    for key in ("requests_per_s", "p95"):
        values = np.array([w[key] if key in w else w["latency_ms"][key] for w in last])
        mean = values.mean()
        if mean <= 0 or np.abs(values - mean).max() > tolerance * mean:
            return False
    return True
