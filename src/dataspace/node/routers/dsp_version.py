"""``GET /.well-known/dspace-version``: the DSP versions this node speaks (unauthenticated)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from dataspace.contracts import version_response
from dataspace.services.catalog import DSP_PATH

PREFIX = ""
router = APIRouter(tags=["dsp"])


@router.get(
    "/.well-known/dspace-version",
    summary="DSP versions this node speaks",
    description=f"The DSP 2025-1 version object, pointing at `{DSP_PATH}`.",
)
def dspace_version() -> dict[str, Any]:
    return version_response(DSP_PATH)
