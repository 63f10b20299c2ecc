"""Tables of the identity area (see DESIGN.md §3). Imported by :mod:`dataspace.store.models`."""

from __future__ import annotations

from dataspace.store.models import Base

__all__ = ["Base"]
