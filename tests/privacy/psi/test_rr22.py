from __future__ import annotations

import importlib.util

import pytest

from dataspace.privacy.psi import PsiUnavailable, rr22_available, run_rr22


@pytest.mark.skipif(importlib.util.find_spec("spu") is not None, reason="spu is installed")
def test_rr22_without_spu_skips_with_install_hint() -> None:
    assert rr22_available() is False
    with pytest.raises(PsiUnavailable, match="spu") as info:
        run_rr22([["91110108MA0123456X"]], "uscc", rank=0, addresses=["a:1", "b:2"])
    assert "pip install" in str(info.value)
