"""Choosing the HTTP stack (issue 13): two candidates serving a trivial KServe v2 JSON infer, same handler.

Each server runs grpc.aio (idle) and the HTTP stack in one event loop (uvloop), as `cnnserve serve` does.
The handler decodes the v2 JSON body with orjson, builds the numpy input, answers a 10-float output tensor.

    taskset -c 1 .venv/bin/python benchmarks/http_stack.py serve aiohttp 19150 &
    taskset -c 1 .venv/bin/python benchmarks/http_stack.py serve uvicorn 19151 &
    taskset -c 0 .venv/bin/python benchmarks/http_stack.py load 19150 19151 --rounds 6

The load generator is a raw keep-alive asyncio client (no HTTP library: it costs the server nothing extra),
closed loop, alternating between the servers each round; it prints the median request rate of each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np
import orjson

BODY = orjson.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": [7] * 784}]})


def infer(body: bytes) -> bytes:
    request = orjson.loads(body)
    t = request["inputs"][0]
    x = np.asarray(t["data"], dtype=np.uint8).reshape(t["shape"])
    out = np.full((x.shape[0], 10), 0.1, dtype=np.float32)
    return orjson.dumps(
        {
            "model_name": "m",
            "model_version": "1",
            "outputs": [{"name": "probs", "datatype": "FP32", "shape": list(out.shape), "data": out.ravel().tolist()}],
        }
    )


async def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        return web.Response(body=infer(body), content_type="application/json")

    server = web.Server(handle)
    await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
    await asyncio.Event().wait()


async def serve_uvicorn(port: int) -> None:
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        payload = infer(b"".join(chunks))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    config = uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    await server.serve()


async def start_grpc() -> None:
    import grpc

    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    await server.start()


async def serve(stack: str, port: int) -> None:
    await start_grpc()
    await (serve_aiohttp(port) if stack == "aiohttp" else serve_uvicorn(port))


async def _connection(port: int, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        counts[0] += 1
    writer.close()


async def load(port: int, seconds: float, concurrency: int) -> float:
    counts = [0]
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(_connection(port, start + seconds, counts) for _ in range(concurrency)))
    return counts[0] / (loop.time() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("stack", choices=["aiohttp", "uvicorn"])
    s.add_argument("port", type=int)
    ld = sub.add_parser("load")
    ld.add_argument("ports", type=int, nargs="+")
    ld.add_argument("--rounds", type=int, default=6)
    ld.add_argument("--seconds", type=float, default=4.0)
    ld.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    import uvloop

    if args.cmd == "serve":
        uvloop.run(serve(args.stack, args.port))
        return
    rates: dict[int, list[float]] = {port: [] for port in args.ports}
    for r in range(args.rounds):
        order = args.ports if r % 2 == 0 else list(reversed(args.ports))
        for port in order:
            uvloop.run(load(port, 1.0, args.concurrency))  # warm-up
            rates[port].append(uvloop.run(load(port, args.seconds, args.concurrency)))
        time.sleep(0.1)
    for port, values in rates.items():
        print(
            f"port {port}: median {statistics.median(values):,.0f} req/s "
            f"(min {min(values):,.0f}, max {max(values):,.0f}, {len(values)} rounds)"
        )


if __name__ == "__main__":
    main()
