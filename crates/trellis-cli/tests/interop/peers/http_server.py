"""An HTTP/1.1 origin built on Python's standard library, for the interoperability
suite: it serves files, checks uploads and streams many small chunks, knowing nothing
of the mesh in front of it.

    PORT=8080 python3 http_server.py DIR

GET /files/NAME      the file DIR/NAME, with content-length
POST /upload         the body (content-length or chunked) answered as
                     {"bytes": N, "sha256": "..."}
GET /events?n=N      N server-sent events "data: I" (I from 0), one chunk each, flushed
"""

import hashlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path.startswith("/files/"):
            self.serve_file(os.path.basename(url.path))
        elif url.path == "/events":
            count = int(parse_qs(url.query).get("n", ["0"])[0])
            self.stream_events(count)
        else:
            self.answer(404, b"not found\n", "text/plain")

    def do_POST(self):
        if urlsplit(self.path).path != "/upload":
            self.answer(404, b"not found\n", "text/plain")
            return
        digest = hashlib.sha256()
        size = 0
        for block in self.body():
            digest.update(block)
            size += len(block)
        report = {"bytes": size, "sha256": digest.hexdigest()}
        self.answer(200, json.dumps(report).encode(), "application/json")

    def serve_file(self, name):
        path = os.path.join(self.server.root, name)
        if not os.path.isfile(path):
            self.answer(404, b"no such file\n", "text/plain")
            return
        with open(path, "rb") as f:
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(os.path.getsize(path)))
            self.end_headers()
            while block := f.read(256 * 1024):
                self.wfile.write(block)

    def stream_events(self, count):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(count):
            event = f"data: {i}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def body(self):
        """The request body in blocks, decoding chunked transfer coding."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            left = int(self.headers.get("content-length", "0"))
            while left > 0:
                block = self.rfile.read(min(left, 256 * 1024))
                if not block:
                    return
                left -= len(block)
                yield block

    def answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.root = sys.argv[1]
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
