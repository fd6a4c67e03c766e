"""A uvicorn server in a thread of the test process, on a socket bound to a free loopback port."""

from __future__ import annotations

import socket
import threading
import time


class InThread:
    """`with InThread(server, path) as s:` serves until the block ends; `s.url` is the base URL (+ `path`)."""

    def __init__(self, server, path: str = ""):
        self.server = server
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
