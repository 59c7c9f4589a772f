"""A WebSocket client on the `websockets` library, for the interoperability suite.

    python3 ws_client.py ws://HOST:PORT/

Talks to ws_server.py and checks every answer: text and binary echoes, a ping from
each side, a 1 MiB binary message, a close code the server chooses, and a close of its
own (code 4001, reason "client done"), which the server reports. Prints one line per
case that passed ("ok CASE ...") and exits 1 at the first that did not.
"""

import asyncio
import hashlib
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def check(case, condition, detail):
    if not condition:
        print(f"FAILED {case}: {detail}", flush=True)
        sys.exit(1)


async def main(url):
    async with connect(url, max_size=None, ping_interval=None) as ws:
        for i in range(100):
            text = f"hello {i} " + "é" * i
            await ws.send(text)
            answer = await ws.recv()
            check("text", answer == text, f"sent {text!r}, got {answer!r}")
        print("ok text 100", flush=True)

        for size in (0, 1, 125, 126, 65535, 65536, 100_000):
            data = bytes((i * 7 + size) % 256 for i in range(size))
            await ws.send(data)
            answer = await ws.recv()
            check("binary", answer == data, f"{size} bytes sent, {len(answer)} back")
        print("ok binary 7", flush=True)

        latency = await (await ws.ping(b"from-client"))
        print(f"ok client-ping pong after {latency:.4f}s", flush=True)
        await ws.send("ping-me")
        answer = await ws.recv()
        check("server-ping", answer == "pong-received", f"got {answer!r}")
        print("ok server-ping", flush=True)

        big = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)
        await ws.send(big)
        answer = await ws.recv()
        check("1MiB", answer == big, f"{len(answer)} bytes back")
        print(f"ok 1MiB {hashlib.sha256(answer).hexdigest()}", flush=True)

    async with connect(url, max_size=None, ping_interval=None) as ws:
        await ws.send("close:4002:server done")
        try:
            await ws.recv()
            check("server-close", False, "a message instead of the close")
        except ConnectionClosed:
            pass
        check(
            "server-close",
            (ws.close_code, ws.close_reason) == (4002, "server done"),
            f"closed with {ws.close_code} {ws.close_reason!r}",
        )
        print("ok server-close 4002", flush=True)

    async with connect(url, max_size=None, ping_interval=None) as ws:
        await ws.close(4001, "client done")
        print("ok client-close 4001", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
