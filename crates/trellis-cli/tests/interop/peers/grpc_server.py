"""A gRPC server on `grpcio` with generic handlers (messages are raw bytes, so no code
is generated), for the interoperability suite.

    PORT=50051 python3 grpc_server.py

Service interop.Echo:
  Unary(bytes) -> the same bytes
  ServerStream(b"N") -> N messages b"message I" (I from 0)
  ClientStream(messages) -> b"COUNT SHA256" of their concatenation
  Bidi(messages) -> each message echoed as it comes
  LargeStream(b"N SIZE") -> N messages of SIZE bytes, message I all bytes I % 256
  Fail(bytes) -> status FAILED_PRECONDITION, details "quota exhausted: <bytes>", and
                 trailing metadata x-reason: quota, x-detail-bin: the request bytes
"""

import hashlib
import os
from concurrent import futures

import grpc


def unary(request, context):
    return request


def server_stream(request, context):
    for i in range(int(request)):
        yield b"message %d" % i


def large_stream(request, context):
    count, size = map(int, request.split())
    for i in range(count):
        yield bytes([i % 256]) * size


def client_stream(requests, context):
    digest = hashlib.sha256()
    count = 0
    for message in requests:
        digest.update(message)
        count += 1
    return b"%d %s" % (count, digest.hexdigest().encode())


def bidi(requests, context):
    for message in requests:
        yield message


def fail(request, context):
    context.set_trailing_metadata((("x-reason", "quota"), ("x-detail-bin", request)))
    context.abort(
        grpc.StatusCode.FAILED_PRECONDITION,
        "quota exhausted: " + request.decode(),
    )


def main():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "LargeStream": grpc.unary_stream_rpc_method_handler(large_stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("interop.Echo", handlers),)
    )
    server.add_insecure_port(f"127.0.0.1:{os.environ['PORT']}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
