"""A WebSocket echo server on the `websockets` library, for the interoperability suite.

    PORT=8080 python3 ws_server.py REPORT_FILE

Echoes every message as it came (text as text, binary as binary). Two text commands:
"ping-me" makes the server ping the client and answer "pong-received" once the pong is
back; "close:CODE:REASON" makes the server close with that code and reason. When a
client closes, the code and reason the server received are appended to REPORT_FILE as
"closed CODE REASON".
"""

import asyncio
import os
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def handler(ws):
    try:
        async for message in ws:
            if message == "ping-me":
                pong = await ws.ping(b"from-server")
                await pong
                await ws.send("pong-received")
            elif isinstance(message, str) and message.startswith("close:"):
                _, code, reason = message.split(":", 2)
                await ws.close(int(code), reason)
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass
    with open(sys.argv[1], "a") as report:
        report.write(f"closed {ws.close_code} {ws.close_reason}\n")


async def main():
    async with serve(handler, "127.0.0.1", int(os.environ["PORT"]), max_size=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
