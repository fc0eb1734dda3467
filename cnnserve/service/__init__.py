"""What the server and the explainer sidecar are both built from (neither imports the other).

Error classes with their status codes and the one wrapper that maps them, health with Watch streams that end at
shutdown, TLS and bearer tokens on the server side, request counts, and image decoding for the image calls.
"""
