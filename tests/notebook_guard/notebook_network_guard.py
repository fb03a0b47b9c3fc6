"""Block and record network access in the processes that run the colab/ notebooks in tests.

`install` replaces ``socket.socket.connect``/``connect_ex``, ``socket.create_connection`` and
``socket.getaddrinfo`` with versions that let loopback and Unix-domain sockets through and, for
anything else (including the loopback port the proxy variables name), append a line and the
Python stack to the file named by ``$NOTEBOOK_NETWORK_LOG`` and raise ``OSError``. The log makes
an attempt fail the test even when the code that tried swallows the error.

The kernel and every Python subprocess it starts load it through ``sitecustomize.py`` in this
directory (the tests put it first on ``PYTHONPATH``); the tests also set the proxy variables to a
closed loopback port, which covers non-Python clients (TensorFlow's C++ file systems, curl).

Example:
>>> installed()  # only in processes started by tests/test_notebooks.py
False
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import traceback
import urllib.parse

LOG_ENV = "NOTEBOOK_NETWORK_LOG"
_MARK = "_notebook_network_guard"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_loopback_host(host) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): a local bind address
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost: resolving it is a network access


def _proxy_ports() -> set[int]:
    """Ports of the proxy variables: the tests point them at a closed loopback port, and a
    connection there is a download attempt routed through the proxy."""
    ports = set()
    for key in ("http_proxy", "https_proxy", "all_proxy"):
        for value in (os.environ.get(key), os.environ.get(key.upper())):
            port = urllib.parse.urlsplit(value).port if value else None
            if port:
                ports.add(port)
    return ports


def _is_allowed(address) -> bool:
    if isinstance(address, str | bytes):
        return True  # AF_UNIX path
    if isinstance(address, tuple) and len(address) >= 2:
        return _is_loopback_host(address[0]) and address[1] not in _proxy_ports()
    return False


def _record(what: str) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        stack = "".join(traceback.format_stack(limit=12)[:-2])
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"pid {os.getpid()}: blocked {what}\n{stack}\n")


def _blocked(what: str) -> OSError:
    _record(what)
    return OSError(errno.ENETUNREACH, f"network access blocked by tests/test_notebooks.py: {what}")


def installed() -> bool:
    """Whether the guard is active in this process."""
    return getattr(socket.socket.connect, _MARK, False)


def install() -> None:
    """Activate the guard in this process (idempotent)."""
    if installed():
        return
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo
    real_create_connection = socket.create_connection

    def connect(self, address):
        if not _is_allowed(address):
            raise _blocked(f"connect to {address!r}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if not _is_allowed(address):
            raise _blocked(f"connect_ex to {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback_host(host):
            _record(f"name lookup of {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"name lookup of {host!r} blocked by tests")
        return real_getaddrinfo(host, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        if not _is_allowed(address):
            raise _blocked(f"create_connection to {address!r}")
        return real_create_connection(address, *args, **kwargs)

    setattr(connect, _MARK, True)
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    socket.create_connection = create_connection
