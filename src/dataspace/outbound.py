"""HTTP clients for outgoing calls, all sharing one TLS context per process.

httpx builds a fresh ``SSLContext`` for every ``Client`` — it reads the whole CA bundle, about
35 ms of CPU — even for a plain ``http://`` peer. A node opens a client per peer call, so a
multi-party job spent more CPU on CA bundles than on its cryptography. The context here is
built once, the way httpx builds it (``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set, else
certifi's bundle), and shared: an ``SSLContext`` may be used by many threads at once.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's verifying TLS context (built on first use)."""
    return httpx.create_ssl_context()


def http_client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(**kwargs)`` verifying servers with :func:`tls_context`."""
    return httpx.Client(verify=tls_context(), **kwargs)
