"""A real S3 API on loopback for tests: moto's threaded server, and the AWS environment that points every
client in this process (and every Ray worker started after it) at it and nowhere else.

Why the environment and not a client argument: Ray workers build their own s3fs clients on their own nodes; a
cluster configures its endpoint and credentials the same way (AWS_* variables, config files or roles)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

# Dummy credentials, no config files, no instance-metadata lookups: nothing may leave this machine.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@contextmanager
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port); yields its endpoint URL with the AWS_* environment set to
    it for as long as it runs."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*AWS_ENV, "AWS_ENDPOINT_URL_S3"]}
    os.environ.update(AWS_ENV, AWS_ENDPOINT_URL_S3=endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def new_bucket(prefix: str = "facecurate") -> str:
    """A fresh bucket on the server the environment points at; returns ``s3://bucket``."""
    import fsspec

    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"


class StallingProxy:
    """A TCP proxy in front of the server that forwards at most ``limit`` bytes of each request stream and then
    stops reading it, so a client is caught mid-upload for as long as a test wants (to kill it there)."""

    def __init__(self, upstream: str, limit: int) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream, self.limit = (host, int(port)), limit
        self.stalled = threading.Event()
        self.forwarded = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        sent = 0
        try:
            while True:
                room = self.limit - sent if upload else 1 << 16
                if room <= 0:
                    self.stalled.set()  # stop reading: the client blocks on a full socket buffer
                    return
                data = src.recv(min(room, 1 << 16))
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                if upload:
                    self.forwarded += len(data)
        except OSError:
            pass
        finally:
            if not upload:
                with _quiet():
                    dst.close()

    def close(self) -> None:
        """Drop every connection (the server sees the upload end short) and stop listening."""
        self._listener.close()
        for s in self._sockets:
            with _quiet():
                s.shutdown(socket.SHUT_RDWR)
            with _quiet():
                s.close()


def _quiet() -> suppress[OSError]:
    return suppress(OSError)
