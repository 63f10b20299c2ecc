"""Every limit and threshold in one table, with its default and what it is for.

A node's ``node.toml`` may override any of them under ``[limits]``; nothing else in the
code base hard-codes a limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dataspace.errors import UsageError

# Two defaults the CLI declares in its options, here so it need not import the services that
# use them: the environment variable naming the node directory when --node is not given
# (services.node), and the largest |local sum| a party may bring to a secure aggregation when
# the request names no bound (services.multiparty).
ENV_NODE = "DATASPACE_NODE"
#: A pipe's read end a server inherits from the process that started it (a scenario's
#: cluster): at its end of file that process is gone, and the server stops.
ENV_STOP_WITH_FD = "DATASPACE_STOP_WITH_FD"
DEFAULT_AGGREGATE_BOUND = 1e12


@dataclass(frozen=True)
class Setting:
    """A limit; a number's override must be positive (``zero_ok``: or 0, where 0 means
    something), finite, and at most ``at_most``."""

    name: str
    default: Any
    help: str
    zero_ok: bool = False
    at_most: float = math.inf


SETTINGS: tuple[Setting, ...] = (
    Setting("import_memory_limit_mb", 512, "DuckDB memory limit while importing a file (MiB)"),
    Setting("import_threads", 2, "DuckDB threads while importing a file"),
    Setting("import_max_line_bytes", 8_388_608, "longest CSV line accepted on import (bytes)"),
    Setting("sniff_bytes", 1_048_576, "bytes read to detect a CSV file's encoding and dialect"),
    Setting(
        "classify_sample_rows", 10_000, "non-null values sampled per column for classification"
    ),
    Setting(
        "classify_min_share", 0.8, "share of sampled values that must validate to classify",
        at_most=1.0,
    ),
    Setting(
        "classify_hint_min_confidence",
        0.3,
        "least confidence for a finding to classify a column (contradicted header hints score 0.2)",
        at_most=1.0,
    ),
    Setting("profile_top_values", 5, "top values listed per non-sensitive column", zero_ok=True),
    Setting("api_max_page", 1000, "most ledger entries returned by one API call"),
    Setting("sandbox_memory_limit_mb", 512, "memory limit of a governed query's worker (MiB)"),
    Setting("sandbox_threads", 2, "DuckDB threads of a governed query's worker"),
    Setting("sandbox_timeout_seconds", 30.0, "wall-clock limit of a governed query (seconds)"),
    Setting(
        "sandbox_kill_grace_seconds", 2.0, "wait after interrupt() before killing the worker",
        zero_ok=True,
    ),
    Setting("sandbox_max_temp_mb", 1024, "temp space a governed query may spill (MiB)"),
    Setting("sandbox_max_result_rows", 100_000, "most rows a governed query may release"),
    Setting("sandbox_max_result_bytes", 67_108_864, "most bytes a governed query may release"),
    Setting(
        "sandbox_max_workers",
        4,
        "governed queries that may run at once on this node; one more is refused with a 503",
    ),
    Setting(
        "min_group_size_floor",
        10,
        "least contributors per released group of a governed query, whatever the policy says "
        "(k = max(this, the policy's minGroupSize))",
    ),
    Setting(
        "job_lease_seconds",
        300.0,
        "a provider job still unfinished this long after its claim is failed as interrupted "
        "(at least the sandbox timeout plus its kill grace is always allowed)",
    ),
    Setting(
        "peer_signature_max_skew_seconds", 30, "clock skew allowed on peer signatures",
        zero_ok=True,
    ),
    Setting("peer_signature_max_age_seconds", 300, "oldest peer signature accepted (seconds)"),
    Setting("peer_signature_lifetime_seconds", 60, "lifetime this node gives its own signatures"),
    Setting("peer_replay_prune_interval_seconds", 60, "how often expired nonces are pruned"),
    Setting(
        "peer_denied_log_per_minute", 60, "refused peer requests logged per minute",
        zero_ok=True,
    ),
    Setting(
        "membership_issue_skew_seconds", 300, "how far ahead a membership list may be issued",
        zero_ok=True,
    ),
    Setting("transfer_token_ttl_seconds", 300, "how long a transfer's one-time pull token works"),
    Setting("transfer_pull_timeout_seconds", 120.0, "longest wait for a transfer's data (seconds)"),
    Setting("transfer_max_mb", 10240, "largest transfer this node receives (MiB)"),
    Setting(
        "transfer_start_timeout_seconds",
        3600.0,
        "a transfer this node requested that its provider has not started this long after is "
        "ended here (code start_timeout) and the provider told",
    ),
    Setting(
        "transfer_completion_grace_seconds",
        900.0,
        "a transfer this node delivered and billed whose consumer has confirmed nothing this "
        "long after is completed here and the consumer told",
    ),
    Setting(
        "dp_train_max_delta",
        1e-5,
        "largest δ a DP-FedAvg job may state here (the agreement's own δ bound applies too)",
    ),
    Setting("mp_step_timeout_seconds", 120.0, "longest wait for one multi-party step's answer"),
    Setting("mp_idle_timeout_seconds", 120.0, "a participant fails a job its initiator left idle"),
    Setting("mp_max_idle_timeout_seconds", 3600.0, "cap on the idle timeout an initiator may ask"),
    Setting("mp_max_job_seconds", 86400.0,
            "a participant ends a job running longer, however alive its initiator keeps it"),
    Setting(
        "mp_max_buffered_mb",
        1024,
        "most bytes of a training job's messages waiting at this node to be taken (MiB)",
    ),
    Setting(
        "train_max_cells",
        200_000_000,
        "most values (rows × columns, every party's) of a training job's feature blocks",
    ),
    Setting(
        "rr22_link_ports",
        "20000-32767",
        "TCP ports (FIRST-LAST) this node's RR22 links listen on; outside the kernel's "
        "ephemeral range, so no outgoing connection or port-0 bind takes a link's port "
        "between its choice and its engine's bind",
    ),
    Setting(
        "http_head_timeout_seconds",
        10.0,
        "a connection whose request head has not fully arrived this long after it began is "
        "closed (slowloris)",
    ),
    Setting("api_max_upload_mb", 2048, "largest dataset upload the HTTP API accepts (MiB)"),
    Setting("api_max_body_mb", 16, "largest request body of the API and DSP routes (MiB)"),
    Setting("peer_max_body_mb", 512, "largest node-to-node request body (MiB)"),
    Setting(
        "ledger_witness_interval_seconds",
        60.0,
        "how often a serving node asks the witnesses named in node.toml [ledger] to cosign "
        "its newest checkpoint (only when its log grew)",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


class Limits(Mapping[str, Any]):
    """The effective limits: defaults overlaid with a node's overrides."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        values = {s.name: s.default for s in SETTINGS}
        for key, value in (overrides or {}).items():
            setting = _BY_NAME.get(key)
            if setting is None:
                raise UsageError(
                    f"unknown limit '{key}' in node.toml [limits]",
                    hint="known limits: " + ", ".join(sorted(_BY_NAME)),
                )
            if type(value) is not type(setting.default) and not (
                isinstance(setting.default, float) and isinstance(value, int)
            ):
                raise UsageError(
                    f"limit '{key}' must be {type(setting.default).__name__}, got {value!r}",
                    hint="fix node.toml [limits]",
                )
            if isinstance(value, int | float) and not (
                math.isfinite(value) and (value >= 0 if setting.zero_ok else value > 0)
                and value <= setting.at_most
            ):
                bound = (f"in (0, {setting.at_most:g}]" if setting.at_most < math.inf else
                         "0 or more" if setting.zero_ok else "positive")
                raise UsageError(f"limit '{key}' must be {bound}, got {value!r}",
                                 hint=f"fix node.toml [limits] (default {setting.default!r})")
            values[key] = value
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None
