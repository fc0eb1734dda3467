"""`cnnserve bench`: a load generator for any KServe v2 / Triton gRPC server (cnnserve, MLServer, Triton).

Several client processes (one grpc.aio loop each) send pre-serialised ``ModelInfer`` requests, either
closed-loop (a fixed number of requests in flight) or open-loop (a constant or Poisson request rate).
The parent process cuts the completions into a warm-up and measurement windows, stops a level once the
windows agree (or after a fixed duration), and reads the server's own ``ModelStatistics`` at every window
boundary. Results go to JSON, CSV and a PNG plot.
"""
