"""Three long-lived connections carrying traffic, for the interoperability suite: a
WebSocket (to ws_server.py), a gRPC bidi stream (to grpc_server.py) and a plain TCP
connection to a redis server.

    python3 long_lived.py WS_URL GRPC_TARGET REDIS_HOST:PORT

Each opens one connection and then sends a message, waits for its answer and checks
it, again and again, never reconnecting. Prints "ready" once each has had an answer,
keeps going until stdin closes, then prints one JSON line: for each connection the
messages sent and answered, and the first error, if any.
"""

import asyncio
import json
import sys

import grpc
from websockets.asyncio.client import connect

PAUSE = 0.005
ANSWER_TIMEOUT = 10


class Connection:
    def __init__(self):
        self.sent = 0
        self.answered = 0
        self.error = None
        self.first_answer = asyncio.Event()

    def report(self):
        return {"sent": self.sent, "answered": self.answered, "error": self.error}

    async def run(self, exchange, stop):
        """exchange(i) sends message i and returns whether its answer was right."""
        try:
            while not stop.is_set():
                self.sent += 1
                right = await asyncio.wait_for(exchange(self.sent), ANSWER_TIMEOUT)
                if not right:
                    raise ValueError(f"wrong answer to message {self.sent}")
                self.answered += 1
                self.first_answer.set()
                await asyncio.sleep(PAUSE)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            self.first_answer.set()


async def websocket(url, conn, stop):
    async with connect(url, ping_interval=None) as ws:
        async def exchange(i):
            await ws.send(f"message {i}")
            return await ws.recv() == f"message {i}"

        await conn.run(exchange, stop)


async def grpc_bidi(target, conn, stop):
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream("/interop.Echo/Bidi")()

        async def exchange(i):
            await call.write(b"message %d" % i)
            return await call.read() == b"message %d" % i

        await conn.run(exchange, stop)
        if conn.error is None:
            await call.done_writing()
            if await call.read() != grpc.aio.EOF or await call.code() != grpc.StatusCode.OK:
                conn.error = f"the stream ended with {await call.code()}"


async def redis(address, conn, stop):
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))

    async def exchange(i):
        writer.write(b"PING m%d\r\n" % i)
        expected = b"$%d\r\nm%d\r\n" % (len(b"m%d" % i), i)
        return await reader.readexactly(len(expected)) == expected

    await conn.run(exchange, stop)
    writer.close()


async def guarded(connection, conn, stop):
    """Runs a connection, recording the error that ends it, connecting included."""
    try:
        await connection
    except Exception as e:
        conn.error = conn.error or f"{type(e).__name__}: {e}"
    conn.first_answer.set()


async def main(ws_url, grpc_target, redis_address):
    stop = asyncio.Event()
    conns = {"websocket": Connection(), "grpc": Connection(), "tcp": Connection()}
    connections = [
        websocket(ws_url, conns["websocket"], stop),
        grpc_bidi(grpc_target, conns["grpc"], stop),
        redis(redis_address, conns["tcp"], stop),
    ]
    tasks = [
        asyncio.create_task(guarded(connection, conn, stop))
        for connection, conn in zip(connections, conns.values())
    ]
    await asyncio.gather(*(c.first_answer.wait() for c in conns.values()))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stop.set()
    for task, (name, conn) in zip(tasks, conns.items()):
        try:
            await asyncio.wait_for(task, ANSWER_TIMEOUT)
        except Exception as e:
            conn.error = conn.error or f"{type(e).__name__}: {e}"
    print(json.dumps({name: c.report() for name, c in conns.items()}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
