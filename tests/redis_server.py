"""A real ``redis-server`` on a free 127.0.0.1 port in a temporary directory, for the shared-cache tests."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class RedisServer:
    """Starts, stops and restarts one ``redis-server`` (no persistence: a restart comes back empty).

    Example:
        >>> server = RedisServer(tmp_path).start()  # doctest: +SKIP
        >>> server.url  # doctest: +SKIP
        'redis://127.0.0.1:40123/0'
    """

    binary = shutil.which("redis-server")
    extra_args: tuple[str, ...] = ()  # e.g. ("--loadmodule", path) for a server with modules
    env: dict[str, str] | None = None  # the server's environment (None: this process's)

    def __init__(
        self, directory: Path, password: str | None = None, monitor: int | None = None, cluster: bool = False
    ) -> None:
        self.directory = directory
        self.port = _free_port()
        while cluster and not (self.port + 10_000 < 65_536 and _is_free(self.port + 10_000)):
            self.port = _free_port()  # a cluster node also listens on its port + 10000 (the bus)
        self.monitor = monitor
        self.cluster = cluster
        self.password = password
        auth = "" if password is None else f":{password}@"
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        assert self.binary is not None
        sentinel: list[str] = []
        if self.monitor is not None:  # a Sentinel watching the server on port `monitor` as "mymaster"
            config = self.directory / f"sentinel-{self.port}.conf"
            config.write_text(f"sentinel monitor mymaster 127.0.0.1 {self.monitor} 1\n")
            sentinel = [str(config), "--sentinel"]
        self._process = subprocess.Popen(
            [
                self.binary,
                *sentinel,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
                *(["--requirepass", self.password] if self.password else []),
                *(["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
                  if self.cluster else []),
                *self.extra_args,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 20 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def pause(self) -> None:
        """Freezes the server (SIGSTOP): connections are still accepted, but nothing answers, as when its
        host hangs or the network drops packets silently."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stops the server and starts an empty one on the same port."""
        self.stop()
        self.start()

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url)


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
