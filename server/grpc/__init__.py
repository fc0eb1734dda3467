"""The gRPC transport of the server: servicers that turn protobuf into plain values for the handlers and back."""
