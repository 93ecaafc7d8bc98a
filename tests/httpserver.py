"""A tiny file server on 127.0.0.1 for download tests: Range requests, truncation on demand, going down.

    with FileServer({"/a.pt": data}) as server:
        server.url("/a.pt")        # http://127.0.0.1:<port>/a.pt
        server.truncate_next = 100 # the next response sends its headers, 100 body bytes, then hangs up
        server.requests            # [(path, Range header or None), ...] of every request seen
        server.stop()              # later requests get "connection refused"
"""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Content-Length framing, so a short body is a detectable truncation

    def do_GET(self):
        owner = self.server.owner
        range_header = self.headers.get("Range")
        owner.requests.append((self.path, range_header))
        data = owner.files.get(self.path)
        if data is None:
            self.send_error(404, "no such file")
            return
        start = int(range_header.removeprefix("bytes=").split("-")[0]) if range_header and owner.ranges else 0
        if start >= len(data) and start > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut, owner.truncate_next = owner.truncate_next, None
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True  # hang up mid-body: the client sees fewer bytes than announced
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


class FileServer:
    """Serves `files` ({url path: bytes}); `ranges=False` makes it ignore Range headers (always 200)."""

    def __init__(self, files: dict, ranges: bool = True):
        self.files, self.ranges = dict(files), ranges
        self.truncate_next = None
        self.requests = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.running = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.running:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self.running = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
