"""Request fields several routers share, bounded as the services bound them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dataspace.services.reasons import MAX_REASON

# Trimmed before its length is checked, as the service trims it (services/reasons.py): a blank
# reason is refused here (422) and never reaches the peer or a ledger.
Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REASON),
    Field(description="why; the peer is told and both ledgers record it"),
]


class Body(BaseModel):
    """An API request body: a field it does not define is an error (a misspelt
    ``wait_second`` silently ignored would change what the caller gets), not dropped."""

    model_config = ConfigDict(extra="forbid")
