"""Outgoing HTTP clients: one verifying TLS context per process, not one per client."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from dataspace import outbound


@pytest.fixture
def fresh_context() -> Iterator[None]:
    outbound.tls_context.cache_clear()
    yield
    outbound.tls_context.cache_clear()


def test_clients_share_one_context_built_once(
    fresh_context: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[ssl.SSLContext] = []
    real = httpx.create_ssl_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        context = real(*args, **kwargs)  # type: ignore[arg-type]
        built.append(context)
        return context

    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    for _ in range(3):
        with outbound.http_client(base_url="http://127.0.0.1:9"):
            pass
    assert len(built) == 1


def test_the_shared_context_verifies_certificates_and_host_names(fresh_context: None) -> None:
    context = outbound.tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] > 0  # a CA bundle was loaded
