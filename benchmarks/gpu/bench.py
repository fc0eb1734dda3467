"""The GPU measurements of issue 17 in one run: cnnserve serve, raw onnxruntime, PyTorch, the card's limit.

Run through ``benchmarks/gpu/run.sh`` (which installs the carried wheels first). Every phase writes into one
result document; a phase that fails records its error and the next one runs. Under ``--out``:
``results.json`` (everything), ``results.md`` (the tables), ``server.log``, ``nvidia-smi.csv``.

1. build: VGG16 and ResNet50 with onnx.helper (``nets.py``), fp32 and their fp16 variants
   (``cnnserve.export.fp16``), in a Triton-layout repository;
2. raw: each graph in onnxruntime in-process, session built as the server builds it (``OnnxModel`` with the
   server's provider plan), per batch size; with CUDA also with CUDA graphs; the session's providers; the
   fp16 variant's agreement with fp32 on the same random images;
3. serve: ``cnnserve serve --device DEVICE`` on that repository, ``cnnserve bench``'s runner per model at
   several request sizes and concurrencies: images/s, p50/p99, the server's mean batch;
4. torch: torchvision's VGG16/ResNet50 (random weights, channels-last, cuDNN benchmark mode), fp32 (TF32
   allowed, as onnxruntime's CUDA provider does) and fp16, per batch size; skipped where torch is missing;
5. limit: a dense matrix product's TFLOP/s on the device (torch; numpy on the CPU), and for each network the
   images/s that rate allows (``flops`` per image from the graph), beside the spec sheet's peak;
6. nvidia-smi sampled every 250 ms throughout: GPU utilisation and memory per phase.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nets  # noqa: E402  (this folder; the script runs from anywhere)

# H200 SXM spec sheet, dense (no sparsity): what the card could do at best.
SPEC_TFLOPS = {"fp32": 494.7, "fp16": 989.4}  # TF32 and FP16 tensor cores
SPEC_NAME = "NVIDIA H200 SXM spec sheet, dense tensor-core TF32 / FP16"


class Run:
    """The result document, the phase clock and the deadline."""

    def __init__(self, args) -> None:
        self.args = args
        self.start = time.monotonic()
        self.deadline = self.start + args.budget_s
        self.doc: dict = {
            "tool": "benchmarks/gpu/bench.py",
            "command": " ".join(sys.argv),
            "device": args.device,
            "tiny": args.tiny,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "phases": {},
        }

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def phase(self, name: str, fn, *, needs_s: float = 0.0):
        if self.left() < needs_s:
            self.doc["phases"][name] = {"skipped": f"{self.left():.0f} s left of the budget, {needs_s:.0f} s needed"}
            log(f"[{name}] skipped: budget")
            return None
        log(f"[{name}] start ({self.left():.0f} s left)")
        t0 = time.time()
        entry: dict = {"started_unix": round(t0, 3)}
        self.doc["phases"][name] = entry
        try:
            entry["result"] = fn()
        except Exception as exc:  # one failing phase must not cost the others' figures
            import traceback

            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            log(f"[{name}] FAILED: {entry['error']}")
        entry["seconds"] = round(time.time() - t0, 1)
        entry["ended_unix"] = round(time.time(), 3)
        self.save()
        return entry.get("result")

    def save(self) -> None:
        out = self.args.out
        (out / "results.json").write_text(json.dumps(self.doc, indent=2, default=str) + "\n")
        (out / "results.md").write_text(markdown(self.doc))


def log(line: str) -> None:
    print(line, flush=True)


# ------------------------------------------------------------------ environment and GPU sampling


def environment(args) -> dict:
    import onnxruntime as ort

    env = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "available_providers": ort.get_available_providers(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except Exception as exc:
        env["torch"] = f"unavailable: {exc}"
    if shutil.which("nvidia-smi"):
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    return env


def start_sampler(out: Path):
    if not shutil.which("nvidia-smi"):
        return None
    query = "timestamp,utilization.gpu,memory.used,power.draw,clocks.sm"
    return subprocess.Popen(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-lms", "250"],
        stdout=open(out / "nvidia-smi.csv", "w"),  # noqa: SIM115  (closed with the process)
        stderr=subprocess.DEVNULL,
    )


def utilisation(out: Path, doc: dict) -> dict:
    """Mean and max GPU utilisation and max memory per phase, from the sampler's file."""
    import datetime

    path = out / "nvidia-smi.csv"
    if not path.is_file():
        return {"available": False, "why": "nvidia-smi not found"}
    samples = []
    for line in path.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            ts = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((ts, float(parts[1]), float(parts[2])))
        except (ValueError, IndexError):
            continue
    if not samples:
        return {"available": False, "why": "no samples"}
    # nvidia-smi writes local time; the phases' clocks are Unix time: align on the first sample.
    offset = 0.0
    first_phase = min((p["started_unix"] for p in doc["phases"].values() if "started_unix" in p), default=None)
    if first_phase is not None and abs(samples[0][0] - first_phase) > 1800:
        offset = round((first_phase - samples[0][0]) / 3600) * 3600
    per_phase = {}
    for name, p in doc["phases"].items():
        if "started_unix" not in p:
            continue
        inside = [s for s in samples if p["started_unix"] <= s[0] + offset <= p.get("ended_unix", 1e18)]
        if inside:
            util = [s[1] for s in inside]
            per_phase[name] = {
                "samples": len(inside),
                "gpu_util_mean": round(sum(util) / len(util), 1),
                "gpu_util_max": max(util),
                "memory_used_max_mib": max(s[2] for s in inside),
            }
    return {"available": True, "samples": len(samples), "per_phase": per_phase}


# ------------------------------------------------------------------ 1. models


def sizes(args) -> dict:
    if args.tiny:
        return {"size": 32, "scale": 16, "classes": 10, "resnet_blocks": [1, 1, 1, 1]}
    return {"size": 224, "scale": 1, "classes": 1000, "resnet_blocks": None}


def build(args) -> dict:
    from cnnserve.export.fp16 import convert_fp16

    s = sizes(args)
    repo = args.work / "models"
    shutil.rmtree(repo, ignore_errors=True)
    kind = "KIND_GPU" if args.device == "cuda" else "KIND_CPU"
    built = {}
    for net in ("vgg16", "resnet50"):
        t0 = time.time()
        if net == "vgg16":
            model, flops = nets.vgg16(size=s["size"], scale=s["scale"], classes=s["classes"])
        else:
            model, flops = nets.resnet50(
                size=s["size"], scale=s["scale"], classes=s["classes"], blocks=s["resnet_blocks"]
            )
        params = int(sum(int(np.prod(i.dims)) for i in model.graph.initializer))
        common = dict(size=s["size"], classes=s["classes"], max_batch=args.max_batch, delay_us=args.delay_us, kind=kind)
        path = nets.write_model(repo, net, model, **common)
        del model
        t1 = time.time()
        path16 = nets.write_model(repo, f"{net}_fp16", _placeholder(), **common)
        convert_fp16(path, path16)
        built[net] = {
            "gflop_per_image": round(flops / 1e9, 3),
            "params_m": round(params / 1e6, 2),
            "onnx_mb": {"fp32": round(path.stat().st_size / 1e6, 1), "fp16": round(path16.stat().st_size / 1e6, 1)},
            "build_s": round(t1 - t0, 1),
            "fp16_convert_s": round(time.time() - t1, 1),
        }
        gc.collect()
    return {"repository": str(repo), "input": [s["size"], s["size"], 3], "classes": s["classes"], "models": built}


def _placeholder():
    from onnx import helper

    return helper.make_model(helper.make_graph([], "placeholder", [], []))


# ------------------------------------------------------------------ 2. raw onnxruntime


def server_settings(args, **fields):
    from cnnserve.server.settings import ServerSettings

    return ServerSettings(model_repository=args.work / "models", device=args.device, **fields)


def raw(args) -> dict:
    from cnnserve.server.providers import plan_providers

    variants = {"io_binding": {}} if args.device == "cuda" else {"plain": {"io_binding": "off"}, "io_binding": {}}
    if args.device == "cuda":
        variants["cuda_graphs"] = {"cuda_graphs": True}
    if args.device == "cpu":
        variants["io_binding"] = {"io_binding": "on"}
    out: dict = {"variants": {}, "fp16_agreement": {}}
    for variant, fields in variants.items():
        plan = plan_providers(server_settings(args, **fields))
        rows = []
        probe: dict = {}
        for name in ("vgg16", "vgg16_fp16", "resnet50", "resnet50_fp16"):
            try:
                probe[name] = _raw_model(args, variant, plan, name, rows)
            except Exception as exc:  # e.g. a graph onnxruntime cannot capture: the other rows still count
                rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
                log(f"  raw {variant} {name} FAILED: {rows[-1]['error'][:300]}")
            gc.collect()
        out["variants"][variant] = rows
        if not out["fp16_agreement"] and all(n in probe for n in ("vgg16", "vgg16_fp16", "resnet50", "resnet50_fp16")):
            from cnnserve.export.fp16 import compare_fp16

            for net in ("vgg16", "resnet50"):
                out["fp16_agreement"][net] = compare_fp16(probe[net], probe[f"{net}_fp16"]).as_dict()
    return out


def _raw_model(args, variant: str, plan, name: str, rows: list) -> np.ndarray:
    """One graph's rows (one per batch size); returns its probabilities for 8 fixed images (the same for every
    graph, so that fp16 is compared with fp32 on the same inputs)."""
    from cnnserve.repository import read_model
    from cnnserve.server.runtime import OnnxModel

    spec = read_model(args.work / "models", name)[0]
    t0 = time.time()
    model = OnnxModel(spec, plan.for_model(spec))
    load_s = time.time() - t0
    x = np.random.default_rng(0).integers(0, 256, (8, *spec.inputs[0].dims), dtype=np.uint8)
    for size in args.batch_sizes:
        batch = {"images": np.resize(x, (size, *x.shape[1:]))}
        t1 = time.time()
        for _ in range(model.warmup_runs):
            model.run(batch)
        first_s = time.time() - t1
        times = []
        t_end = time.perf_counter() + args.seconds
        while len(times) < 3 or time.perf_counter() < t_end:
            t2 = time.perf_counter()
            model.run(batch)
            times.append(time.perf_counter() - t2)
        rows.append(
            {
                "model": name,
                "batch_size": size,
                "runs": len(times),
                "images_per_s": round(size * len(times) / sum(times), 1),
                "ms_per_batch_p50": round(float(np.median(times)) * 1e3, 3),
                "warmup_s": round(first_s, 2),
                "session_load_s": round(load_s, 2),
                "providers": model.providers,
            }
        )
        log(f"  raw {variant} {name} batch {size}: {rows[-1]['images_per_s']} images/s")
    probs = model.run({"images": x})["probabilities"]
    del model
    return probs


# ------------------------------------------------------------------ 3. cnnserve serve


def serve(args) -> dict:
    from cnnserve.client.bench.report import rows as bench_rows
    from cnnserve.client.bench.runner import BenchConfig, run
    from cnnserve.process import wait_ready

    log_path = args.out / "server.log"
    command = [
        sys.executable, "-m", "cnnserve.cli", "serve", "--model-repository", str(args.work / "models"),
        "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1", "--http-port", "-1",
        "--device", args.device,
    ]  # fmt: skip
    if args.device == "cpu":
        command += ["--io-binding", "on"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True, env=env)  # noqa: SIM115
    try:
        ready = wait_ready(proc, timeout=max(60.0, args.budget_s / 2))
        start_s = time.time() - t0
        target = f"127.0.0.1:{ready['grpc_port']}"
        levels = []
        for name in ("vgg16", "vgg16_fp16", "resnet50", "resnet50_fp16"):
            for images, concurrency in args.serve_levels:
                try:
                    # A level that completed no request in its window (a loaded machine, a slow first batch)
                    # is measured again with a longer window, so its row holds a rate rather than a zero.
                    for seconds in (args.seconds, args.seconds * 4, args.seconds * 16):
                        cfg = BenchConfig(
                            target=target,
                            model=name,
                            concurrency=[concurrency],
                            images_per_request=images,
                            processes=max(1, min(4, (os.cpu_count() or 2) // 4)),
                            warmup_s=min(1.0, seconds),
                            duration_s=seconds,
                            label=f"{name} x{images} c{concurrency}",
                        )
                        (row,) = bench_rows(run(cfg))
                        if row.get("ok"):
                            break
                except Exception as exc:  # one level's failure must not cost the others
                    levels.append({"model": name, "images_per_request": images, "concurrency": concurrency,
                                   "error": f"{type(exc).__name__}: {exc}"[:2000]})  # fmt: skip
                    log(f"  serve {name} x{images} c{concurrency} FAILED: {levels[-1]['error'][:300]}")
                    continue
                levels.append(row)
                log(
                    f"  serve {name} {images} img/request, concurrency {concurrency}: {row['images_per_s']} images/s, "
                    f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, mean batch {row['server_mean_batch_size']}"
                )
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    server_log = log_path.read_text()
    loaded = [
        line.split("loaded with providers", 1)[1].strip()
        for line in server_log.splitlines()
        if "loaded with providers" in line
    ]
    return {"command": " ".join(command), "start_s": round(start_s, 1), "session_providers": loaded, "levels": levels}


# ------------------------------------------------------------------ 4. PyTorch


def torch_phase(args) -> dict:
    try:
        import torch
        import torchvision
    except ImportError as exc:
        return {"skipped": f"PyTorch not installed here ({exc})"}
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    s = sizes(args)
    rows = []
    errors = {}
    for net in ("vgg16", "resnet50"):
        try:
            _torch_net(args, torch, torchvision, device, s, net, rows)
        except Exception as exc:  # recorded; the other network still runs
            errors[net] = f"{type(exc).__name__}: {exc}"[:2000]
            log(f"  torch {net} FAILED: {errors[net][:300]}")
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "device": str(device), "rows": rows,
            "errors": errors}  # fmt: skip


def _torch_net(args, torch, torchvision, device, s: dict, net: str, rows: list) -> None:
    base = getattr(torchvision.models, net)(weights=None, num_classes=s["classes"]).eval()
    for precision in ("fp32", "fp16"):
        if precision == "fp16" and device.type == "cpu":
            continue
        dtype = torch.float16 if precision == "fp16" else torch.float32
        model = base.to(device=device, dtype=dtype, memory_format=torch.channels_last)
        for size in args.batch_sizes:
            x = torch.randint(0, 256, (size, s["size"], s["size"], 3), dtype=torch.uint8, device=device)

            def step(model=model, x=x, dtype=dtype):
                # As the ONNX graphs do: uint8 NHWC in, scaling and layout in the network, softmax out.
                y = x.permute(0, 3, 1, 2).to(dtype).mul(1 / 127.5).sub(1).contiguous(memory_format=torch.channels_last)
                return torch.softmax(model(y).float(), dim=-1)

            with torch.inference_mode():
                for _ in range(3):
                    step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                runs, t0 = 0, time.perf_counter()
                while runs < 3 or time.perf_counter() - t0 < args.seconds:
                    step()
                    runs += 1
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
            rows.append(
                {
                    "model": net if precision == "fp32" else f"{net}_fp16",
                    "batch_size": size,
                    "runs": runs,
                    "images_per_s": round(size * runs / elapsed, 1),
                }
            )
            log(f"  torch {rows[-1]['model']} batch {size}: {rows[-1]['images_per_s']} images/s")
        del model
    del base


# ------------------------------------------------------------------ 5. arithmetic limit


def limit(args, built: dict | None) -> dict:
    measured = {}
    if args.device == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
        n = 8192
        for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            a = torch.randn(n, n, device="cuda", dtype=dtype)
            b = torch.randn(n, n, device="cuda", dtype=dtype)
            for _ in range(3):
                a @ b
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(10):
                a @ b
            torch.cuda.synchronize()
            measured[precision] = round(2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12, 1)
            del a, b
        source = f"torch {n}x{n}x{n} matrix product, mean of 10 after 3 (fp32 with TF32)"
        spec = SPEC_TFLOPS
    else:
        n = 1024
        a = np.random.default_rng(0).standard_normal((n, n), np.float32)
        a @ a
        t0, runs = time.perf_counter(), 0
        while runs < 5 or time.perf_counter() - t0 < 0.5:
            a @ a
            runs += 1
        measured["fp32"] = round(2 * n**3 * runs / (time.perf_counter() - t0) / 1e12, 4)
        source = f"numpy {n}x{n}x{n} float32 matrix product"
        spec = {}
    ceilings = {}
    for net, info in ((built or {}).get("models") or {}).items():
        flop = info["gflop_per_image"] * 1e9
        ceilings[net] = {p: round(t * 1e12 / flop, 1) for p, t in measured.items()}
        if spec:
            ceilings[net]["spec_sheet"] = {p: round(t * 1e12 / flop, 1) for p, t in spec.items()}
    return {"measured_tflops": measured, "source": source, "spec_tflops": spec, "images_per_s_ceiling": ceilings}


# ------------------------------------------------------------------ report


def markdown(doc: dict) -> str:
    lines = [f"# GPU benchmark ({doc['device']}{', tiny models' if doc['tiny'] else ''}), {doc['started_utc']}", ""]
    lines.append(f"`{doc['command']}`")
    phases = doc["phases"]
    env = (phases.get("environment") or {}).get("result") or {}
    if env:
        lines += ["", f"onnxruntime {env.get('onnxruntime')} {env.get('available_providers')}; torch {env.get('torch')}; "
                  f"{env.get('gpu') or env.get('nvidia_smi') or 'no GPU'}; {env.get('cpus')} CPUs"]  # fmt: skip
    for name, p in phases.items():
        if "error" in p or "skipped" in p:
            lines.append(f"- phase {name}: {p.get('error') or p.get('skipped')}")
    built = (phases.get("build") or {}).get("result") or {}
    if built:
        lines += ["", "| network | GFLOP/image | params (M) | ONNX MB fp32 / fp16 |", "| --- | ---: | ---: | --- |"]
        for net, m in built["models"].items():
            lines.append(
                f"| {net} | {m['gflop_per_image']} | {m['params_m']} | {m['onnx_mb']['fp32']} / {m['onnx_mb']['fp16']} |"
            )
    raw_ = (phases.get("raw") or {}).get("result") or {}
    if raw_:
        lines += ["", "Raw onnxruntime, in-process (images/s by batch size):", ""]
        for variant, all_rows in raw_["variants"].items():
            rows = [r for r in all_rows if "error" not in r]
            lines += [f"- {variant} {r['model']}: {r['error'][:300]}" for r in all_rows if "error" in r]
            if not rows:
                continue
            bs = sorted({r["batch_size"] for r in rows})
            lines += [
                f"| {variant} | " + " | ".join(f"b{b}" for b in bs) + " | providers |",
                "| --- |" + " ---: |" * len(bs) + " --- |",
            ]
            for model in dict.fromkeys(r["model"] for r in rows):
                mine = {r["batch_size"]: r for r in rows if r["model"] == model}
                prov = next(iter(mine.values()))["providers"]
                lines.append(f"| {model} | " + " | ".join(str(mine[b]["images_per_s"]) for b in bs) + f" | {prov[0]} |")
            lines.append("")
        for net, a in raw_.get("fp16_agreement", {}).items():
            lines.append(
                f"- {net} fp16 vs fp32 on {a['samples']} random images: top-1 {a['top1_agreement']}, "
                f"max |dprob| {a['max_abs_diff']:.2e}"
            )
    served = (phases.get("serve") or {}).get("result") or {}
    if served:
        lines += ["", f"cnnserve serve (`{served['command']}`), started in {served['start_s']} s:", "",
                  "| model | images/request | concurrency | images/s | p50 ms | p99 ms | server mean batch | errors |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        for r in served["levels"]:
            if "error" in r:
                lines.append(
                    f"| {r['model']} | {r['images_per_request']} | {r['concurrency']} | {r['error'][:200]} | | | | |"
                )
                continue
            lines.append(
                f"| {r['model']} | {r['images_per_request']} | {r['concurrency']} | {r['images_per_s']} | {r['p50_ms']} | "
                f"{r['p99_ms']} | {r['server_mean_batch_size']} | {r['errors'] or 0} |"
            )
        lines += ["", "Session providers (server log): " + "; ".join(sorted(set(served["session_providers"])))]
    tp = (phases.get("torch") or {}).get("result") or {}
    if tp.get("rows"):
        bs = sorted({r["batch_size"] for r in tp["rows"]})
        lines += ["", f"PyTorch {tp['torch']} on {tp['device']} (images/s):", "",
                  "| model | " + " | ".join(f"b{b}" for b in bs) + " |", "| --- |" + " ---: |" * len(bs)]  # fmt: skip
        for model in dict.fromkeys(r["model"] for r in tp["rows"]):
            mine = {r["batch_size"]: r["images_per_s"] for r in tp["rows"] if r["model"] == model}
            lines.append(f"| {model} | " + " | ".join(str(mine.get(b, "")) for b in bs) + " |")
    lines += [f"- torch {net}: {e[:300]}" for net, e in (tp.get("errors") or {}).items()]
    if tp.get("skipped"):
        lines.append(f"- torch: {tp['skipped']}")
    lim = (phases.get("limit") or {}).get("result") or {}
    if lim:
        lines += ["", f"Arithmetic limit: {lim['measured_tflops']} TFLOP/s measured ({lim['source']}); "
                  f"spec {lim['spec_tflops'] or '-'} ({SPEC_NAME if lim['spec_tflops'] else 'CPU'})", ""]  # fmt: skip
        for net, c in lim["images_per_s_ceiling"].items():
            lines.append(f"- {net}: at most {c} images/s")
    util = doc.get("gpu_utilisation") or {}
    if util.get("available"):
        lines += ["", "GPU utilisation per phase (nvidia-smi, 250 ms):", ""]
        for name, u in util["per_phase"].items():
            lines.append(
                f"- {name}: mean {u['gpu_util_mean']} %, max {u['gpu_util_max']} %, memory up to {u['memory_used_max_mib']} MiB"
            )
    elif util:
        lines.append(f"- GPU utilisation: {util.get('why')}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny VGG16/ResNet50 (32x32, widths / 16): the CPU proof")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-bench-out")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnnserve-gpu-bench"))
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (default %(default)s)")
    parser.add_argument("--budget-s", type=float, default=330.0, help="phases that no longer fit are skipped")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--max-batch", type=int, default=32, help="the served models' max_batch_size")
    parser.add_argument("--delay-us", type=int, default=2000, help="the served models' max queue delay")
    parser.add_argument("--serve-levels", default="1x1,1x16,1x64,8x16", help="IMAGESxCONCURRENCY,...")
    parser.add_argument("--phases", default="build,raw,serve,torch,limit")
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if int(b) <= args.max_batch]
    args.serve_levels = [tuple(int(v) for v in level.split("x")) for level in args.serve_levels.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    wanted = set(args.phases.split(","))
    r = Run(args)
    sampler = start_sampler(args.out)
    try:
        r.phase("environment", lambda: environment(args))
        built = r.phase("build", lambda: build(args)) if "build" in wanted else None
        if "raw" in wanted:
            r.phase("raw", lambda: raw(args), needs_s=30)
        if "serve" in wanted:
            r.phase("serve", lambda: serve(args), needs_s=60)
        if "torch" in wanted:
            r.phase("torch", lambda: torch_phase(args), needs_s=30)
        if "limit" in wanted:
            r.phase("limit", lambda: limit(args, built), needs_s=5)
    finally:
        if sampler is not None:
            sampler.terminate()
            sampler.wait(10)
        r.doc["gpu_utilisation"] = utilisation(args.out, r.doc)
        r.doc["total_s"] = round(time.monotonic() - r.start, 1)
        r.save()
    failed = [n for n, p in r.doc["phases"].items() if "error" in p]
    log(f"done in {r.doc['total_s']} s; results in {args.out}; failed phases: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
