"""A gRPC client on `grpcio`, for the interoperability suite.

    python3 grpc_client.py TARGET [COUNT]

Calls grpc_server.py's interop.Echo at TARGET (host:port; grpcio goes through
`http_proxy` when it is set) and checks every answer: a unary call, then a
server-stream, a client-stream and a bidi stream of COUNT (default 10000) small
messages each, streams of 1 MiB messages both ways, a stream cancelled halfway
beside a bidi stream that must go on, then a failing call whose status, details and trailers must arrive.
Prints one line per case that passed ("ok CASE ...") and exits 1 at the first that did
not.
"""

import hashlib
import queue
import sys

import grpc


def check(case, condition, detail):
    if not condition:
        print(f"FAILED {case}: {detail}", flush=True)
        sys.exit(1)


def main(target, count):
    with grpc.insecure_channel(target) as channel:
        method = lambda kind, name: getattr(channel, kind)(f"/interop.Echo/{name}")

        answer = method("unary_unary", "Unary")(b"hello", timeout=30)
        check("unary", answer == b"hello", f"got {answer!r}")
        print("ok unary", flush=True)

        received = list(method("unary_stream", "ServerStream")(b"%d" % count, timeout=60))
        expected = [b"message %d" % i for i in range(count)]
        check("server-stream", received == expected, f"{len(received)} messages")
        print(f"ok server-stream {len(received)}", flush=True)

        sent = [b"m%d" % i for i in range(count)]
        answer = method("stream_unary", "ClientStream")(iter(sent), timeout=60)
        digest = hashlib.sha256(b"".join(sent)).hexdigest()
        check("client-stream", answer == b"%d %s" % (count, digest.encode()), answer)
        print(f"ok client-stream {count}", flush=True)

        sent = [b"b%d" % i for i in range(count)]
        received = list(method("stream_stream", "Bidi")(iter(sent), timeout=60))
        check("bidi", received == sent, f"{len(received)} messages back")
        print(f"ok bidi {len(received)}", flush=True)

        received = list(method("unary_stream", "LargeStream")(b"64 1048576", timeout=60))
        check("large-messages", len(received) == 64, f"{len(received)} of 64 messages")
        for i, message in enumerate(received):
            check("large-messages", message == bytes([i]) * 1048576, f"message {i} altered")
        sent = [hashlib.sha256(b"%d" % i).digest() * 32768 for i in range(32)]
        received = list(method("stream_stream", "Bidi")(iter(sent), timeout=60))
        check("large-messages", received == sent, f"{len(received)} of 32 echoed intact")
        print("ok large-messages 64+32 MiB", flush=True)

        # A stream cancelled halfway ends alone: the bidi stream beside it on the same
        # connection goes on.
        outgoing = queue.Queue()
        bidi = method("stream_stream", "Bidi")(iter(outgoing.get, None), timeout=60)
        echo = lambda m: outgoing.put(m) or next(bidi) == m
        check("cancel", echo(b"before"), "the bidi stream did not start")
        stream = method("unary_stream", "ServerStream")(b"1000000", timeout=60)
        first = [next(stream) for _ in range(100)]
        check("cancel", first == [b"message %d" % i for i in range(100)], "first messages")
        stream.cancel()
        check("cancel", stream.code() == grpc.StatusCode.CANCELLED, stream.code())
        check("cancel", all(echo(b"after %d" % i) for i in range(100)), "bidi after cancel")
        outgoing.put(None)
        check("cancel", next(bidi, None) is None and bidi.code() == grpc.StatusCode.OK, bidi.code())
        print("ok cancel", flush=True)

        try:
            method("unary_unary", "Fail")(b"tenant-7", timeout=30)
            check("status", False, "the call succeeded")
        except grpc.RpcError as e:
            trailers = dict(e.trailing_metadata() or ())
            check("status", e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.code())
            check("status", e.details() == "quota exhausted: tenant-7", e.details())
            check("status", trailers.get("x-reason") == "quota", trailers)
            check("status", trailers.get("x-detail-bin") == b"tenant-7", trailers)
        print("ok status FAILED_PRECONDITION", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10_000)
