"""Creating and opening a node: its directory, keys, config and state database.

Layout of a node directory::

    node.toml          config (name, store URL, server, [limits] overrides)
    keys/node.key      Ed25519 private key, PKCS#8 PEM, mode 0600
    keys/node.pub      the C2SP verifier key string for checkpoints and proofs
    state.db           SQLite state (WAL) unless node.toml names a PostgreSQL URL
    data/              dataset contents as Parquet
    tmp/               scratch space for jobs and imports
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import tomli_w

from dataspace.errors import DataspaceError, NodeExists, NodeNotFound, StoreError, UsageError
from dataspace.identity import keys
from dataspace.identity.note import NoteSigner
from dataspace.scratch import ALIVE_DIR, INIT_PREFIX, process_tag, register_alive, write_whole
from dataspace.services.names import check_node_name
from dataspace.settings import ENV_NODE as ENV_NODE
from dataspace.settings import Limits
from dataspace.store import Store

logger = logging.getLogger("dataspace.node")

CONFIG_FILE = "node.toml"
KEY_FILE = Path("keys") / "node.key"
PUB_FILE = Path("keys") / "node.pub"
NODE_DIR_MODE = 0o700  # the node directory and its folders: owner only


@dataclass
class Node:
    """An opened node. Cheap to create; the store and key are loaded on first use
    (:func:`open_node` checks the store's schema at once)."""

    root: Path
    config: dict[str, Any]
    limits: Limits = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.config["node"]["name"])

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def alive_dir(self) -> Path:
        """The lock files of the live processes that opened this node (scratch.register_alive)."""
        return self.tmp_dir / ALIVE_DIR

    @property
    def origin(self) -> str:
        """The log's origin line and the name its checkpoints are signed under."""
        return f"dataspace/{self.name}"

    @cached_property
    def store(self) -> Store:
        cfg = self.config.get("store", {})
        url = cfg.get("url") or f"sqlite:///{self.root / 'state.db'}"
        return Store(url, cfg.get("schema") or None)

    @cached_property
    def signer(self) -> NoteSigner:
        return NoteSigner(self.origin, keys.load_private_key(self.root / KEY_FILE))

    def verifier_key(self) -> str:
        return (self.root / PUB_FILE).read_text(encoding="utf-8").strip()

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()


def default_actor() -> str:
    """Who acts when a command runs on the node's own machine."""
    import pwd

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"cli:{user}"


def init_node(
    root: Path,
    name: str,
    *,
    database_url: str | None = None,
    database_schema: str | None = None,
    actor: str | None = None,
) -> tuple[Node, str]:
    """Create a node; returns it and the admin API token, which is shown only this once."""
    from dataspace.ledger import log
    from dataspace.services import tokens

    check_node_name(name)
    root = root.expanduser().absolute()
    if (root / CONFIG_FILE).exists():
        raise NodeExists(f"{root} already holds a node", hint="choose another directory")
    if root.exists() and not root.is_dir():
        raise NodeExists(f"{root} is a file, not a directory",
                         hint="choose a new or empty directory")
    _clear_interrupted_init(root)
    if root.exists() and any(root.iterdir()):
        raise NodeExists(f"{root} is not empty", hint="choose a new or empty directory")
    created_root = not root.exists()
    try:
        root.mkdir(mode=NODE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the node directory {root}: {exc.strerror or exc}",
                         hint="choose a directory in a place you may write to") from None
    node: Node | None = None
    try:
        # The directory holds the node's key, its registered data and its state: its owner's
        # alone (it is new or empty, so nobody else's files lose access).
        os.chmod(root, NODE_DIR_MODE)
        # Until node.toml is written (last) the marker says whose unfinished node this is:
        # an init killed before the end is cleared by the next one, not taken for a node.
        marker = root / f"{INIT_PREFIX}{process_tag()}"
        marker.touch(mode=0o600)
        for sub in ("keys", "data", "tmp"):
            (root / sub).mkdir(mode=NODE_DIR_MODE, exist_ok=True)
        register_alive(root / "tmp" / ALIVE_DIR)  # the marker below names a live process
        key = keys.generate_key()
        keys.write_private_key(root / KEY_FILE, key)
        config: dict[str, Any] = {
            "node": {"name": name, "created": _now().isoformat()},
            "server": {"host": "127.0.0.1", "port": 8600},
            "limits": {},
        }
        if database_url:
            config["store"] = {"url": database_url, "schema": database_schema or ""}
        node = Node(root, config, Limits())
        (root / PUB_FILE).write_text(node.signer.verifier_key() + "\n", encoding="utf-8")
        _refuse_a_used_store(node.store)  # before migrating what may be another node's schema
        node.store.migrate()
        who = actor or default_actor()
        with node.store.write() as session:
            _refuse_a_used_store(node.store, session)  # one created meanwhile
            log.append(
                session,
                actor=who,
                action="node.created",
                payload={"name": name, "verifier_key": node.signer.verifier_key()},
            )
            secret = tokens.issue_in(session, name="admin", role="admin", actor=who)
            log.sign_checkpoint(session, node.signer, node.origin)
        write_whole(root / CONFIG_FILE, tomli_w.dumps(config).encode())  # a node from here
        marker.unlink()
        return node, secret
    except BaseException:
        if node is not None:
            node.close()  # its connections, before the directory (and a SQLite file) goes
        _remove_partial_node(root, created_root)
        raise


def _refuse_a_used_store(store: Store, session: Any = None) -> None:
    """NodeExists if the state database already holds a node's log (a PostgreSQL schema
    shared by mistake, or one an interrupted init filled)."""
    from dataspace.ledger import log

    if session is None:
        try:
            with store.read() as reading:
                held = log.size(reading)
        except StoreError:  # no tables yet: a new database
            return
    else:
        held = log.size(session)
    if held:
        raise NodeExists(
            "the state database already holds a node's log",
            hint="give the new node its own --database-schema or an empty database (if an "
            "interrupted `dataspace init` filled this one, drop it first)",
        )


def _clear_interrupted_init(root: Path) -> None:
    """Empty ``root`` if it holds what an init killed before its end left (its marker, no
    node.toml); refuse if that init is still running."""
    from dataspace.scratch import is_stale

    markers = list(root.glob(f"{INIT_PREFIX}*")) if root.is_dir() else []
    if not markers:
        return
    if not all(is_stale(m.name, INIT_PREFIX, root / "tmp" / ALIVE_DIR) for m in markers):
        raise NodeExists(f"a node is being created in {root} right now",
                         hint="wait for that `dataspace init` to finish")
    _remove_partial_node(root, created_root=False)


def _remove_partial_node(root: Path, created_root: bool) -> None:
    if created_root:
        shutil.rmtree(root, ignore_errors=True)
        return
    for child in root.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def open_node(root: Path | str | None) -> Node:
    """Open the node at ``root`` (or $DATASPACE_NODE)."""
    if root is None or str(root) == "":
        env = os.environ.get(ENV_NODE)
        if not env:
            raise NodeNotFound(
                "no node given",
                hint=f"pass --node DIR or set {ENV_NODE}; create one with `dataspace init DIR`",
            )
        root = env
    root = Path(root).expanduser().absolute()
    cfg_path = root / CONFIG_FILE
    if not cfg_path.is_file():
        if any(root.glob(f"{INIT_PREFIX}*")):
            raise NodeNotFound(f"no node at {root}: its creation did not finish",
                               hint="run `dataspace init` there again")
        raise NodeNotFound(
            f"no node at {root}", hint="create one with `dataspace init DIR --name NAME`"
        )
    try:
        config = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{cfg_path} is not valid TOML: {exc}", hint="fix or restore node.toml"
        ) from None
    _check_config(cfg_path, config)
    for key_file in (KEY_FILE, PUB_FILE):
        if not (root / key_file).is_file():
            raise UsageError(f"node at {root} has lost its key file {key_file}",
                             hint="restore the node's keys/ folder from its backup")
    node = Node(root, config, Limits(config.get("limits")))
    _check_key_pair(node)
    _clean_scratch(node)
    try:
        _bring_schema_up_to_date(node)
    except BaseException:
        node.close()
        raise
    return node


def _check_key_pair(node: Node) -> None:
    """keys/node.pub is the public half of keys/node.key: a node whose files disagree signs
    checkpoints its own published key does not open, and every verify would blame the log."""
    try:
        published = node.verifier_key()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {node.root / PUB_FILE}: {exc}",
                         hint="restore the node's keys/ folder from its backup") from None
    if published != node.signer.verifier_key():
        raise UsageError(
            f"{node.root / PUB_FILE} is not the public key of {node.root / KEY_FILE}",
            hint="restore the node's keys/ folder from its backup; the public key the node "
            "published at its creation is in its ledger's entry 0 (node.created)",
        )


#: node.toml's tables and the type of each key this version reads from them.
CONFIG_TYPES: dict[str, dict[str, type]] = {
    "node": {"name": str},
    "server": {"host": str, "port": int},
    "store": {"url": str, "schema": str},
}


def _check_config(path: Path, config: dict[str, Any]) -> None:
    """Refuse a node.toml whose values this version cannot use, naming the value."""
    def bad(what: str) -> UsageError:
        return UsageError(f"{path}: {what}", hint="fix or restore node.toml")

    if not isinstance(config.get("node"), dict) or "name" not in config["node"]:
        raise bad("it has no [node] name")
    for table, keys_types in CONFIG_TYPES.items():
        section = config.get(table, {})
        if not isinstance(section, dict):
            raise bad(f"{table} must be a table ([{table}])")
        for key, kind in keys_types.items():
            value = section.get(key)
            if value is not None and (type(value) is not kind):
                raise bad(f"[{table}] {key} must be a {kind.__name__}, got {value!r}")
    if not isinstance(config.get("limits", {}), dict):
        raise bad("limits must be a table ([limits])")
    try:
        check_node_name(config["node"]["name"])
    except DataspaceError as exc:
        raise bad(f"[node] name: {exc.message}") from None
    port = config.get("server", {}).get("port")
    if port is not None and not 0 < port < 65536:
        raise bad(f"[server] port must be 1-65535, got {port}")


MIGRATE_LOCK = "migrate.lock"  # under tmp/: one process upgrades a node's schema at a time


def _bring_schema_up_to_date(node: Node) -> None:
    """Upgrade the state database of a node an earlier version made (its schema misses this
    version's migrations), once, under a lock; refuse one a newer version upgraded."""
    from dataspace.store.migrate import HEADS

    missing = node.store.url.startswith("sqlite:///") and not Path(
        node.store.url.removeprefix("sqlite:///")
    ).exists()  # connecting would create it, empty
    current = frozenset() if missing else node.store.schema_revisions()
    if current == HEADS:
        return
    if not current:  # init migrates before node.toml exists: a node's database never is empty
        raise StoreError(
            f"node {node.name}'s state database holds no dataspace schema: it is not the "
            "database this node was created with (state.db moved or deleted, or [store] in "
            "node.toml changed)",
            hint="restore the node's state database, or fix [store] in node.toml",
        )
    with _held(node.tmp_dir / MIGRATE_LOCK):
        current = node.store.schema_revisions()  # another process may have done it meanwhile
        if current == HEADS:
            return
        from dataspace.store.migrate import known_revisions

        newer = current - known_revisions()
        if newer:
            raise StoreError(
                f"the node's state database is at schema revision(s) {', '.join(sorted(newer))}"
                ", which this version of dataspace does not know: a newer version upgraded it",
                hint="run the dataspace version that last opened this node, or a newer one",
            )
        from dataspace.store.migrate import UpgradeBlocked

        try:
            node.store.migrate()
        except Exception as exc:  # one transaction: nothing of the upgrade stays
            said = exc.message if isinstance(exc, DataspaceError) else str(exc)
            raise StoreError(
                f"upgrading node {node.name}'s state database failed, nothing was changed: "
                f"{said}",
                hint=exc.hint if isinstance(exc, UpgradeBlocked) else
                "the dataspace version that last opened the node still opens it; report the error",
            ) from exc
        logger.warning("upgraded node %s's state database from revisions %s to %s", node.name,
                       ", ".join(sorted(current)), ", ".join(sorted(HEADS)))


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` for the block (waits for another holder)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot lock {path} to upgrade the node's state database: {exc.strerror}",
            hint="open the node as the user that owns its directory (and its tmp/)",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # say why we wait rather than seem to hang
            logger.warning("waiting for another process upgrading the node's state database")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # no locks on this file system (ENOLCK)
            raise StoreError(
                f"cannot lock {path} to upgrade the node's state database: {exc.strerror}",
                hint="keep the node's directory on a local file system",
            ) from None
        yield
    finally:
        os.close(fd)


def _clean_scratch(node: Node) -> None:
    """Remove what a killed import, upload or RR22 run left behind (only files whose writing
    process is gone)."""
    from dataspace.scratch import (
        IMPORT_PREFIX,
        REMOVING_PREFIX,
        RR22_PREFIX,
        STAGING_PREFIX,
        UPLOAD_PREFIX,
        any_named,
        register_alive,
        remove_libpsi_traces,
        sweep,
        sweep_alive,
    )

    node.tmp_dir.mkdir(exist_ok=True)
    alive = node.alive_dir
    try:
        register_alive(alive)  # first: what this process writes is never taken for a dead one's
        sweep_alive(alive)
        # the import code (DuckDB, Arrow: ~0.3 s to load) only when an import left something
        if any_named(node.data_dir, (IMPORT_PREFIX, REMOVING_PREFIX)):
            from dataspace.catalog.ingest import cleanup_partial_imports
            from dataspace.services.datasets import recover_set_aside

            recover_set_aside(node)  # first: a committed import is finished, and so on
            cleanup_partial_imports(node.data_dir, alive)
        sweep(node.tmp_dir, UPLOAD_PREFIX, alive)  # an API upload cut off by a kill: raw rows
        # files written whole (scratch.write_whole) whose writer died before the move: results,
        # row positions, model parts, the pseudonym secret, membership, node.toml
        for folder in (node.root / "results", node.data_dir / "mp", node.data_dir / "models",
                       node.root / "keys", node.root / "space", node.root):
            sweep(folder, STAGING_PREFIX, alive)
        rr22_scratch = node.tmp_dir / "rr22"
        if rr22_scratch.is_dir():
            sweep(rr22_scratch, RR22_PREFIX, alive)  # what a killed RR22 run left
            remove_libpsi_traces(rr22_scratch)  # traces of runs whose process died after
    except DataspaceError:
        raise
    except OSError as exc:
        raise UsageError(f"cannot clean {node.data_dir}: {exc}") from None


def _now() -> datetime:
    return datetime.now(UTC)
