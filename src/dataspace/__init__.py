"""dataspace: a trusted data space node.

Each organisation runs a node that registers its datasets (profiled, classified, graded),
enforces usage policies where the data is, and keeps a verifiable Merkle log of every
state change.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataspace.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # ``dataspace.Client`` is imported on first use, so the CLI does not pay for httpx/pyarrow.
    if name == "Client":
        from dataspace.client import Client

        return Client
    raise AttributeError(f"module 'dataspace' has no attribute {name!r}")
