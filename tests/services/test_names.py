from __future__ import annotations

import pytest

from dataspace.errors import InvalidName
from dataspace.services.names import check_dataset_name, check_node_name


@pytest.mark.parametrize("name", ["sme-loans", "纳税记录", "grid_power.2024", "客户A"])
def test_good_dataset_names_pass(name: str) -> None:
    assert check_dataset_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "path separator"),
        ("x..y", "path separator"),
        (".hidden", "starts with"),
        ("tab\there", "control character"),
        (" padded", "leading or trailing"),
        ("x" * 121, "characters long"),
        ("cafe\u0301", "NFC"),  # 'café' with a combining accent: looks like the NFC one
    ],
)
def test_bad_dataset_names_say_why(name: str, why: str) -> None:
    with pytest.raises(InvalidName, match=why):
        check_dataset_name(name)


@pytest.mark.parametrize("name", ["Bank", "a b", "-a", "", "a" * 64])
def test_bad_node_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        check_node_name(name)


def test_labels_refuse_control_characters_a_terminal_would_obey() -> None:
    from dataspace.services.names import check_label

    assert check_label("分析师 a", "token name") == "分析师 a"
    with pytest.raises(InvalidName, match=r"U\+001B"):
        check_label("a\x1b[31mb", "token name")
