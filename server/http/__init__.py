"""The HTTP front door: KServe v2 REST (with Triton's binary tensor data extension), the image API and the
explainer over HTTP/1.1, beside ``server/grpc/`` over the same transport-free handlers, in the same process
and event loop as grpc.aio.

- ``app.FrontDoor``: the ASGI application (routes in ``routes``, bodies in ``v2``);
- ``server.HttpListener``: uvicorn's httptools protocol on the running loop (slow clients cut off);
- ``mount_static(front_door, "/console", folder, redirect_root=True)``: serve a folder of files (the console).
"""

from cnnserve.server.http.app import FrontDoor, mount_static

__all__ = ["FrontDoor", "mount_static"]
