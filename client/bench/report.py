"""Result files: the JSON document, one CSV row per level, and a latency-versus-throughput PNG."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

CSV_FIELDS = [
    "label",
    "model",
    "images_per_request",
    "concurrency",
    "rate",
    "stable",
    "seconds",
    "requests_per_s",
    "images_per_s",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "ok",
    "errors",
    "sent_total",
    "ok_total",
    "errors_total",
    "server_inference_count",
    "server_execution_count",
    "server_mean_batch_size",
    "server_mean_queue_ms",
    "client_cpu_s",
]


def rows(result: dict) -> list[dict]:
    out = []
    cfg = result["config"]
    for level in result["levels"]:
        lat = level["latency_ms"] or {}
        server = level["server"] or {}
        totals = level["totals"]
        out.append(
            {
                "label": result["label"],
                "model": cfg["model"],
                "images_per_request": cfg["images_per_request"],
                "concurrency": level.get("concurrency", ""),
                "rate": level.get("rate", ""),
                "stable": level["stable"],
                "seconds": level["seconds"],
                "requests_per_s": round(level["requests_per_s"], 2),
                "images_per_s": round(level["images_per_s"], 2),
                "p50_ms": lat.get("p50"),
                "p90_ms": lat.get("p90"),
                "p95_ms": lat.get("p95"),
                "p99_ms": lat.get("p99"),
                "mean_ms": lat.get("mean"),
                "ok": level["ok"],
                "errors": ";".join(f"{k}={v}" for k, v in sorted(level["errors"].items())),
                "sent_total": totals["sent"],
                "ok_total": totals["ok"],
                "errors_total": totals["errors"],
                "server_inference_count": server.get("inference_count"),
                "server_execution_count": server.get("execution_count"),
                "server_mean_batch_size": server.get("mean_batch_size"),
                "server_mean_queue_ms": server.get("mean_queue_ms"),
                "client_cpu_s": totals["client_cpu_s"],
            }
        )
    return out


def write_json(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def write_csv(results: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for result in results:
            writer.writerows(rows(result))
    return path


def write_plot(results: list[dict], path: Path, title: str = "") -> Path | None:
    """p50 (dashed) and p99 (solid) latency against images/s, one colour per run. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'cnnserve[bench]'): no plot written")
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for result in results:
        levels = [lv for lv in result["levels"] if lv["latency_ms"]]
        if not levels:
            continue
        x = [lv["images_per_s"] for lv in levels]
        (line,) = ax.plot(x, [lv["latency_ms"]["p99"] for lv in levels], marker="o", label=f"{result['label']} p99")
        ax.plot(x, [lv["latency_ms"]["p50"] for lv in levels], "--", marker=".", color=line.get_color(), label="p50")
        for lv, xi in zip(levels, x, strict=True):
            tag = f"c={lv['concurrency']:g}" if "concurrency" in lv else f"r={lv['rate']:g}"
            ax.annotate(tag, (xi, lv["latency_ms"]["p99"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("throughput (images/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or ", ".join(sorted({r["config"]["model"] for r in results})))
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(result: dict) -> str:
    """A plain-text table of the levels, for the terminal."""
    head = f"{'level':>12} {'req/s':>10} {'img/s':>10} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'errors':>8} {'batch':>6}"
    lines = [head]
    for r in rows(result):
        level = f"c={r['concurrency']}" if r["concurrency"] != "" else f"r={r['rate']}"
        batch = r["server_mean_batch_size"]
        lines.append(
            f"{level:>12} {r['requests_per_s']:>10.1f} {r['images_per_s']:>10.1f} {_ms(r['p50_ms'])} "
            f"{_ms(r['p90_ms'])} {_ms(r['p99_ms'])} {r['errors_total']:>8} {batch if batch else '-':>6}"
        )
    return "\n".join(lines)


def _ms(value) -> str:
    return f"{value:>9.2f}" if value is not None else f"{'-':>9}"
