"""A gRPC health probe that ships in every image: ``python -m cnnserve.healthcheck 127.0.0.1:8001``.

Exit status 0 when the target answers SERVING, 1 when it answers anything else or cannot be reached in
time, 2 for a usage error. By default it asks the standard ``grpc.health.v1.Health/Check`` (the overall
service, ``""``, unless ``--service`` names one): the server and the explainer both report NOT_SERVING
until every model is loaded and warmed up, and again from SIGTERM on, so this is the readiness check.

``--live`` asks the KServe v2 ``ServerLive`` RPC of the server instead (true from the moment the port is
bound until shutdown): the liveness check, which a slow model load never fails.

An ``http://HOST:PORT`` address asks the server's HTTP port instead: ``GET /v2/health/ready`` (or
``/v2/health/live`` with ``--live``), healthy on 200.

Docker/Compose health checks and Kubernetes exec probes run it; Kubernetes' built-in ``grpc:`` and
``httpGet:`` probes ask the same endpoints without starting a Python process.
"""

from __future__ import annotations

import argparse
import sys

import grpc


def check_health(address: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """Ask grpc.health.v1 Check; returns (serving, what was answered)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def check_live(address: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Ask the KServe v2 ServerLive RPC; returns (live, what was answered)."""
    from cnnserve._proto.inference import grpc_service_pb2, grpc_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        response = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive(
            grpc_service_pb2.ServerLiveRequest(), timeout=timeout
        )
    return response.live, f"live={response.live}"


def check_http(url: str, live: bool = False, timeout: float = 3.0) -> tuple[bool, str]:
    """GET /v2/health/ready (or /live) of the HTTP port; returns (healthy, what was answered)."""
    import urllib.error
    import urllib.request

    path = "/v2/health/live" if live else "/v2/health/ready"
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
    except OSError as exc:
        return False, f"unreachable: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnserve.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument(
        "address",
        nargs="?",
        default="127.0.0.1:8001",
        help="HOST:PORT (gRPC) or http://HOST:PORT (default %(default)s)",
    )
    parser.add_argument("--service", default="", help="health service name (default: the overall status)")
    parser.add_argument("--live", action="store_true", help="ask KServe v2 ServerLive instead of grpc.health.v1")
    parser.add_argument("--timeout", type=float, default=3.0, help="deadline in seconds (default %(default)s)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing; only the exit status")
    args = parser.parse_args(argv)
    try:
        if args.address.startswith("http://"):
            ok, answer = check_http(args.address, args.live, args.timeout)
        elif args.live:
            ok, answer = check_live(args.address, args.timeout)
        else:
            ok, answer = check_health(args.address, args.service, args.timeout)
    except grpc.RpcError as exc:
        ok, answer = False, f"{exc.code().name}: {exc.details()}"
    if not args.quiet:
        print(f"{args.address}: {answer}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
