"""A gRPC bidi stream of small messages, with Python's grpcio and no generated code.

    python3 grpc_stream.py server PORT
    python3 grpc_stream.py client PORT MESSAGES SIZE

The server echoes every message of `/bench.Echo/Stream` back on the same stream. The
client opens one stream, sends MESSAGES messages of SIZE bytes as fast as HTTP/2 flow
control lets it, reads the echoes while it sends, checks that every echo came back in
order and unchanged, and prints one JSON line: messages, bytes, seconds, messages_per_s.
It exits 1 (with the reason on stderr) when the stream fails or an echo is missing or
wrong."""

import json
import sys
import time
from concurrent import futures

import grpc

METHOD = "/bench.Echo/Stream"
SERVICE, NAME = METHOD.strip("/").split("/")
# No proxy from the environment: the benchmark names the path it measures.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def echo(requests, _context):
    for message in requests:
        yield message


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.stream_stream_rpc_method_handler(echo)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {NAME: handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def message(seq, size):
    """Message `seq`: its number in 8 bytes, then filler to `size` bytes."""
    return seq.to_bytes(8, "big") + bytes((seq + i) & 0xFF for i in range(max(size - 8, 0)))


def run_client(port, count, size):
    if size < 8:
        raise SystemExit("grpc_stream: SIZE must be at least 8 bytes (the sequence number)")
    # Two distinct payloads, alternating, so building messages costs nothing in the loop
    # and a reordered or corrupted echo still shows.
    payloads = [message(0, size), message(1, size)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        call = channel.stream_stream(METHOD)
        started = time.monotonic()
        received = 0
        for reply in call(payloads[i & 1] for i in range(count)):
            if reply != payloads[received & 1]:
                raise SystemExit(f"grpc_stream: echo {received} differs from what was sent")
            received += 1
        seconds = time.monotonic() - started
    if received != count:
        raise SystemExit(f"grpc_stream: {received} of {count} echoes came back")
    print(json.dumps({"messages": count, "bytes": count * size, "seconds": seconds,
                      "messages_per_s": count / seconds}))


def main(argv):
    if len(argv) == 2 and argv[0] == "server":
        serve(int(argv[1]))
    elif len(argv) == 4 and argv[0] == "client":
        try:
            run_client(int(argv[1]), int(argv[2]), int(argv[3]))
        except grpc.RpcError as e:
            raise SystemExit(f"grpc_stream: stream failed: {e.code()} {e.details()}")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
