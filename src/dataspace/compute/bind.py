"""Binding a checked query against the table's schema alone, with no data in it.

Some engine errors depend only on the SQL and the column types: a text column compared with a
number, a date function over an integer. A DP query's ε is charged while the worker runs, so
such a query used to cost its whole ε and answer nothing. :func:`bind_problem` plans the query
over an empty table with the dataset's columns -- no file, no rows, external access off -- and
returns the engine's reason; what it finds reveals nothing the published schema does not.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import lru_cache

#: The engine's errors that a schema alone decides (planning an empty table raises no other).
_SCHEMA_ERRORS = ("BinderException", "CatalogException", "ParserException")
_CACHE: dict[tuple[str, str, tuple[tuple[str, str], ...]], str | None] = {}
_CACHE_MAX = 256
_LOCK = threading.Lock()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def bind_problem(sql: str, table: str, columns: Mapping[str, str]) -> str | None:
    """The engine's reason ``sql`` cannot run over ``table`` with ``columns`` (name → type),
    whatever the data; None if it binds -- or if the schema cannot be rebuilt from the types
    given (the worker then decides, as before)."""
    key = (sql, table, tuple(columns.items()))
    if key in _CACHE:
        return _CACHE[key]
    import duckdb  # kept local: the module loads without the engine

    con = duckdb.connect(
        ":memory:",
        config={
            "threads": 1,
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        schema = ", ".join(f"{_quote(name)} {kind}" for name, kind in columns.items())
        try:
            con.execute(f"CREATE TABLE {_quote(table)} ({schema})")
        except duckdb.Error:
            return None
        try:
            con.execute("EXPLAIN " + sql)  # binds and plans; reads and runs nothing
            problem = None
        except duckdb.Error as exc:
            if type(exc).__name__ not in _SCHEMA_ERRORS:
                return None
            problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    finally:
        con.close()
    with _LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = problem
    return problem


@lru_cache(maxsize=1024)
def literal_fits(text: str, kind: str) -> bool:
    """Whether the engine reads the text literal ``text`` as a value of type ``kind`` -- the
    cast a comparison with a column of that type applies to the constant, once, whatever the
    data. True too when ``kind`` is not a type this check can cast to (the worker decides)."""
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": 1, "enable_external_access": False})
    try:
        fits = con.execute(f"SELECT TRY_CAST($1 AS {kind}) IS NOT NULL", [text]).fetchone()
    except duckdb.Error:
        return True
    finally:
        con.close()
    return bool(fits and fits[0])
