"""HTTP servers on 127.0.0.1 for the download tests: one that serves files (optionally declaring
more bytes than it sends), and one that stalls at a chosen point. Nothing leaves the machine."""

from __future__ import annotations

import http.server
import socket
import threading


class Server:
    """Serve ``files[path] = bytes`` on 127.0.0.1; ``short[path]`` declares more than it sends."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.short: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                length = len(data) * 2 if self.path in server.short else len(data)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class StallingServer:
    """Accept connections on 127.0.0.1 and stall: before answering (``body=None``), or after
    sending headers announcing ``declared`` bytes and the first ``len(body)`` of them. Each
    connection is held open until `close` (bounded: at most ``max_connections`` are served)."""

    def __init__(self, body: bytes | None = None, declared: int = 0, max_connections: int = 8):
        self.body, self.declared = body, declared
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._max = max_connections
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set() and len(self.connections) < self._max:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(conn)
            if self.body is not None:
                conn.settimeout(5)
                try:
                    conn.recv(65536)  # the request
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: "
                        + str(self.declared).encode()
                        + b"\r\n\r\n"
                        + self.body
                    )
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        for conn in self.connections:
            conn.close()
        self.sock.close()
