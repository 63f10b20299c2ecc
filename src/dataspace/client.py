"""The Python client for analysts: talk to your own node's API with a bearer token.

::

    from dataspace import Client

    with Client("http://127.0.0.1:8600", token) as c:
        datasets = c.catalog("tax-bureau")          # each with its "offers"
        offer_id = datasets[0]["offers"][0]["id"]
        contract = c.request_contract("tax-bureau", offer_id, "credit-risk")
        result = c.query(contract["agreement_id"], "SELECT district, count(*) FROM t GROUP BY 1")
        result.table            # pyarrow.Table
        result.to_pandas()      # needs pandas
        result.epsilon_left, result.error_bounds, result.price

Errors are raised as the same :class:`~dataspace.errors.DataspaceError` subclasses the node
raised, chosen by the error envelope's ``code`` (``PolicyDenied``, ``QueryRefused``,
``BudgetExhausted``, ``NotFound``, ...); an unknown code raises ``DataspaceError``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import pyarrow as pa

from dataspace.errors import DataspaceError, UsageError, VerificationError
from dataspace.outbound import http_client
from dataspace.services.job_wire import (
    ARROW_MEDIA_TYPE,
    META_HEADER,
    decode_meta,
    error_class,
    error_from_envelope,
    from_ipc,
    sha256_hex,
)

__all__ = ["Client", "QueryResult", "error_class"]

API = "/api/v1"
DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class QueryResult:
    """A released result: the table and what the provider stated about it."""

    table: pa.Table
    meta: dict[str, Any]

    @property
    def job_id(self) -> str:
        return str(self.meta.get("job_id"))

    @property
    def action(self) -> str:
        return str(self.meta.get("action"))

    @property
    def epsilon_spent(self) -> Decimal:
        return Decimal(str(self.meta.get("epsilon_spent", "0")))

    @property
    def epsilon_left(self) -> Decimal | None:
        left = self.meta.get("epsilon_left")
        return None if left is None else Decimal(str(left))

    @property
    def delta_spent(self) -> Decimal:
        return Decimal(str(self.meta.get("delta_spent", "0")))

    @property
    def error_bounds(self) -> dict[str, float]:
        """95% error bound per released column (DP queries; empty otherwise)."""
        return {k: float(v) for k, v in (self.meta.get("error_bounds") or {}).items()}

    @property
    def price(self) -> tuple[Decimal, str] | None:
        price = self.meta.get("price")
        if not price:
            return None
        return Decimal(str(price["amount"])), str(price["currency"])

    @property
    def result_sha256(self) -> str:
        return str(self.meta["result_sha256"])

    def to_pandas(self) -> Any:
        """The table as a pandas DataFrame (pandas is optional: install it to use this)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise UsageError(
                "to_pandas() needs pandas, which is not installed",
                hint="pip install pandas — or use result.table (pyarrow) directly",
            ) from None
        return self.table.to_pandas()



def _part(value: str) -> str:
    """An id as one path segment: "../tokens" must not reach another endpoint, nor "x?a=b"
    add a query; an empty one names nothing."""
    if not isinstance(value, str) or not value.strip() or value in (".", ".."):
        raise UsageError(f"an id must be a non-empty text other than . or .., got {value!r}")
    return quote(value, safe="")

class Client:
    """A session with your own node's HTTP API (``url``) under a bearer ``token``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise UsageError("a token is needed", hint="issue one with `dataspace token issue`")
        self._http = http_client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, API + path, **kwargs)
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # never reached
            raise DataspaceError(
                f"cannot reach the node at {self._http.base_url} ({type(exc).__name__})",
                hint="check the URL and that the node is running (`dataspace serve`)",
            ) from None
        except httpx.TimeoutException as exc:  # it was reached: it may have done the work
            raise DataspaceError(
                f"no answer from the node at {self._http.base_url} within the client's "
                f"timeout ({type(exc).__name__})",
                hint="the node may still finish the request: look before sending it again "
                "(a job: `c.job(JOB_ID)` with the job id you gave); give a longer timeout",
            ) from None
        except httpx.HTTPError as exc:
            raise DataspaceError(
                f"cannot reach the node at {self._http.base_url} ({exc})",
                hint="check the URL and that the node is running (`dataspace serve`)",
            ) from None
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise error_from_envelope(body, response.status_code)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:  # a redirect, a proxy's page: not the node's API answering
            raise DataspaceError(
                f"the answer to {method} {path} is not JSON (HTTP {response.status_code})",
                hint="check the client's URL: it must be the node's own address",
            ) from None

    @staticmethod
    def _params(**values: Any) -> dict[str, Any]:
        return {k: v for k, v in values.items() if v is not None}

    # -- catalog and contracts ----------------------------------------------------------------
    def node(self) -> dict[str, Any]:
        """The node's identity (name, verifier key)."""
        return dict(self._json("GET", "/node"))

    def datasets(self) -> list[dict[str, Any]]:
        """Datasets registered on your node."""
        return list(self._json("GET", "/datasets"))

    def catalog(self, peer: str) -> Any:
        """A peer's catalog (its datasets and offers), fetched by your node."""
        return self._json("GET", f"/peers/{_part(peer)}/catalog")

    def request_contract(
        self, peer: str, offer_id: str, purpose: str, *, wait_seconds: float = 30.0
    ) -> dict[str, Any]:
        """Negotiate an agreement for ``offer_id`` with ``peer`` for ``purpose``."""
        body = {
            "peer": peer,
            "offer_id": offer_id,
            "purpose": purpose,
            "wait_seconds": wait_seconds,
        }
        return dict(self._json("POST", "/contracts", json=body))

    def contracts(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/contracts"))

    def contract(self, contract_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/contracts/{_part(contract_id)}"))

    # -- jobs ---------------------------------------------------------------------------------
    def query(self, agreement_id: str, sql: str, *, job_id: str | None = None) -> QueryResult:
        """Run governed SQL under ``agreement_id`` on the provider; verify the result's hash."""
        body = self._params(agreement_id=agreement_id, sql=sql, job_id=job_id)
        response = self._send("POST", "/jobs/query", json=body)
        if not response.headers.get("content-type", "").startswith(ARROW_MEDIA_TYPE):
            raise VerificationError("the node did not answer with an Arrow IPC stream")
        meta = decode_meta(response.headers.get(META_HEADER))
        if sha256_hex(response.content) != meta.get("result_sha256"):
            raise VerificationError("the result does not match its stated sha256")
        return QueryResult(from_ipc(response.content), meta)

    def jobs(
        self, *, agreement: str | None = None, role: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        params = self._params(agreement=agreement, role=role, state=state)
        return list(self._json("GET", "/jobs", params=params))

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/jobs/{_part(job_id)}"))

    # -- federated training -------------------------------------------------------------------
    def train(
        self,
        agreements: list[str],
        *,
        label: str,
        features: dict[str, list[str]],
        peers: list[str] | None = None,
        model: str = "vlr",
        align: list[str] | None = None,
        dataset: str | None = None,
        params: dict[str, Any] | None = None,
        holdout: float = 0.25,
        seed: int = 0,
        patience: int | None = None,
        validation: float | None = None,
        contribution: bool = True,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        """Start training across nodes (runs in the background); poll :meth:`train_job`.

        ``seed`` draws the held-out and validation splits and the SGD batches (recorded with
        the model; masks and Beaver triples never come from it). ``patience`` turns on early
        stopping for vlr and vlinreg (``validation``: the share of training rows validated on)."""
        body = self._params(
            agreements=agreements,
            peers=peers,
            model=model,
            label=label,
            features=features,
            align=align or [],
            dataset=dataset,
            params=params or {},
            holdout=holdout,
            seed=seed,
            patience=patience,
            validation=validation,
            contribution=contribution,
            job_id=job_id,
        )
        return dict(self._json("POST", "/train", json=body))

    def train_job(self, job_id: str) -> dict[str, Any]:
        """A training job with every node's step events."""
        return dict(self._json("GET", f"/train/jobs/{_part(job_id)}"))

    def wait_train(self, job_id: str, *, timeout: float = 600.0, interval: float = 0.5) -> Any:
        """Poll a training job until it ends; returns its view (SUCCEEDED or FAILED)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.train_job(job_id)
            if view["state"] not in ("QUEUED", "RUNNING"):
                return view
            if time.monotonic() > deadline:
                raise DataspaceError(
                    f"training job {job_id} still {view['state']} after {timeout:g} s",
                    hint="keep polling with train_job(), or raise the timeout",
                )
            time.sleep(interval)

    def retry_train(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/train/jobs/{_part(job_id)}/retry"))

    def predict(self, model: str, rows: list[str]) -> dict[str, Any]:
        """Score the rows of PSI align job(s) ``rows`` with a vertical model (vlr or vgbdt)
        you trained; the scores stay on your node (``result.scores_file``)."""
        return dict(self._json("POST", "/predict", json={"model": model, "rows": rows}))

    def models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/models"))

    def model(self, model_id: str) -> dict[str, Any]:
        """Metrics (seed, best epoch, stopping reason), contribution, who holds which part."""
        return dict(self._json("GET", f"/models/{_part(model_id)}"))

    # -- metering and ledger ------------------------------------------------------------------
    def usage(
        self,
        *,
        agreement: str | None = None,
        period: str | None = None,
        consumer: str | None = None,
    ) -> Any:
        """Usage records (metering), filtered by agreement, period (YYYY-MM) or consumer."""
        params = self._params(agreement=agreement, period=period, consumer=consumer)
        return self._json("GET", "/usage", params=params)

    def bill(
        self,
        *,
        agreement: str | None = None,
        period: str | None = None,
        consumer: str | None = None,
    ) -> Any:
        """The bill (a draft statement with totals) for an agreement and/or a period."""
        params = self._params(agreement=agreement, period=period, consumer=consumer)
        return self._json("GET", "/bills", params=params)

    def issued_bills(
        self,
        *,
        agreement: str | None = None,
        period: str | None = None,
        consumer: str | None = None,
    ) -> list[dict[str, Any]]:
        """Issued bills (id, payer, amounts due, ledger entry), oldest first."""
        params = self._params(agreement=agreement, period=period, consumer=consumer)
        return list(self._json("GET", "/bills/issued", params=params))

    def issued_bill(self, bill_id: str) -> dict[str, Any]:
        """One issued bill, exactly as issued (checked by the node against its ledger entry)."""
        return dict(self._json("GET", f"/bills/{_part(bill_id)}"))

    def ledger_checkpoint(self) -> str:
        """The node's latest signed checkpoint (a C2SP signed note)."""
        return self._send("GET", "/ledger/checkpoint").text
