"""机动车号牌 — mainland vehicle registration plates (GA 36-2018).

* ordinary plates, 7 characters: province abbreviation, issuing-authority letter, then five
  letters or digits (the last may also be 学 (driving school), 警 (police), 挂 (trailer),
  港/澳 (cross-border));
* new-energy plates, 8 characters: small vehicles have ``D``/``F`` — since 2022 also
  ``A B C E`` (battery electric) and ``G H J K`` (other) — then a letter or digit and four
  digits; large vehicles have five digits then ``D`` or ``F``.

Letters ``I`` and ``O`` are never used (they read as 1 and 0). Spaces, dots and dashes are
ignored.
"""

from __future__ import annotations

import re

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, to_halfwidth
from dataspace.catalog.classify.regions import PLATE_PROVINCES

_L = "A-HJ-NP-Z"  # letters without I and O
_PROV = "".join(sorted(PLATE_PROVINCES))
_ORDINARY = re.compile(rf"^[{_PROV}][{_L}][{_L}0-9]{{4}}[{_L}0-9学警挂港澳]$")
_NEV_SMALL = re.compile(rf"^[{_PROV}][{_L}][A-HJK][{_L}0-9][0-9]{{4}}$")
_NEV_LARGE = re.compile(rf"^[{_PROV}][{_L}][0-9]{{5}}[DF]$")


def normalise(value: str) -> str:
    text = to_halfwidth(value).strip().upper()
    for ch in " ·.-•":
        text = text.replace(ch, "")
    return text


def is_valid_plate(value: str) -> bool:
    text = normalise(value)
    if len(text) == 7:
        return _ORDINARY.match(text) is not None
    if len(text) == 8:
        return bool(_NEV_SMALL.match(text) or _NEV_LARGE.match(text))
    return False


class VehiclePlateDetector(BaseDetector):
    category = "vehicle_plate_cn"
    rank = 70
    strength = 0.95
    evidence = "mainland vehicle plates (province abbreviation, authority letter, serial)"
    vocab = HeaderVocab(
        zh=("车牌", "号牌", "车辆号码"),
        en=("plate", "plate_no", "license_plate", "licence_plate", "vehicle_no", "car_no",
            "plate_number"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_valid_plate(value)
