"""Per-agreement pseudonyms for transferred rows.

A pseudonym is ``HMAC-SHA256(K_a, normalise(value))`` in lower-case hex, where the agreement
key ``K_a = HKDF-SHA256(ikm=node secret, salt=None, info=INFO_PREFIX + agreement id)``. The
node secret is 32 random bytes in ``keys/pseudonym.key`` (mode 0600, created on first use);
it never leaves the node. Consequences (docs/transfers.md):

* the same value gets **different** pseudonyms under two agreements, so two consumers cannot
  join their extracts on them, nor with a plain or salted hash of a phone or ID number;
* the provider holds the secret and can recompute every pseudonym (re-identification is
  possible for it, by design: pseudonymized data stays personal information under PIPL);
* within one agreement the mapping is stable, so repeated transfers can be joined.

Only the primitives from ``cryptography`` / ``hmac``; no home-made crypto.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import unicodedata
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dataspace.errors import DataspaceError

__all__ = [
    "INFO_PREFIX",
    "KEY_FILE",
    "agreement_key",
    "hmac_hex",
    "load_or_create_secret",
    "normalise",
    "pseudonym",
    "pseudonymize_table",
]

KEY_FILE = Path("keys") / "pseudonym.key"
SECRET_BYTES = 32
#: domain separation: a key derived for pseudonyms is never the key of anything else
INFO_PREFIX = b"dataspace/pseudonym/v1\n"


def load_or_create_secret(root: Path) -> bytes:
    """The node's pseudonym secret (``root/keys/pseudonym.key``), created on first use with
    mode 0600. Two processes creating it at once agree on the file that won."""
    path = root / KEY_FILE
    path.parent.mkdir(mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(SECRET_BYTES))
            out.flush()
            os.fsync(out.fileno())
    data = path.read_bytes()
    if len(data) != SECRET_BYTES:
        raise DataspaceError(
            f"{path} is not a {SECRET_BYTES}-byte pseudonym secret",
            hint="restore it from backup; a new secret changes every pseudonym",
        )
    return data


def agreement_key(secret: bytes, agreement_id: str) -> bytes:
    """HKDF-SHA256 of the node secret with the agreement id as info: 32 bytes."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=INFO_PREFIX + agreement_id.encode("utf-8"),
    ).derive(secret)


def hmac_hex(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 in lower-case hex (the primitive; RFC 4231 vectors pin it)."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def normalise(value: Any) -> bytes | None:
    """The bytes a value is pseudonymized as; None stays None.

    Text: Unicode NFKC (full-width digits become ASCII), surrounding whitespace removed,
    case-folded (``…X`` and ``…x`` in an ID number are one value). Integers and decimals:
    their plain decimal form; floats: ``repr``; dates: ISO 8601; bytes as they are.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | Decimal):
        text = format(value, "f") if isinstance(value, Decimal) else str(value)
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, datetime | date):
        text = value.isoformat()
    else:
        text = str(value)
    return unicodedata.normalize("NFKC", text).strip().casefold().encode("utf-8")


def pseudonym(key: bytes, value: Any) -> str | None:
    data = normalise(value)
    return None if data is None else hmac_hex(key, data)


def _column(key: bytes, values: Iterable[Any]) -> pa.Array:
    # One Arrow column has one type, so equal values normalise alike: cache per value.
    cache: dict[Any, str | None] = {}
    out: list[str | None] = []
    for value in values:
        if value not in cache:
            cache[value] = pseudonym(key, value)
        out.append(cache[value])
    return pa.array(out, type=pa.string())


def pseudonymize_table(
    table: pa.Table | pa.RecordBatch, columns: Iterable[str], key: bytes
) -> pa.Table:
    """``table`` with each of ``columns`` replaced by its pseudonyms (strings; nulls stay
    null); every other column untouched."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    targets = set(columns)
    arrays, fields = [], []
    for name in table.column_names:
        col = table.column(name)
        if name in targets:
            arrays.append(_column(key, col.to_pylist()))
            fields.append(pa.field(name, pa.string()))
        else:
            arrays.append(col)
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
