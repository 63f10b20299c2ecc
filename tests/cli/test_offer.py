from __future__ import annotations

import json
from pathlib import Path

from dataspace.services.node import open_node


def test_offer_create_list_show_withdraw(cli, tmp_path: Path) -> None:
    from dataspace.samples import SAMPLES_DIR

    cli("init", tmp_path / "n", "--name", "tax")
    node = ["--node", tmp_path / "n"]
    added = cli(*node, "dataset", "add", SAMPLES_DIR / "tax_records.csv", "--name", "tax")
    assert added.exit_code == 0, added.stderr
    made = cli(*node, "offer", "create", "tax", "--template", "dp-stats",
               "--param", "purposes=finance", "--param", "epsilon=2",
               "--dp-bounds", "开票金额=0:10000000", "--dp-epsilon-per-query", "0.5",
               "--price", "100 CNY", "--auto-approve", "--json")
    assert made.exit_code == 0, made.stderr
    offer = json.loads(made.stdout)
    assert offer["auto_approve"] and offer["dp"]["epsilon"] == 0.5
    listed = json.loads(cli(*node, "offer", "list", "--json").stdout)
    assert [o["id"] for o in listed] == [offer["id"]]
    assert json.loads(cli(*node, "offer", "show", offer["id"], "--json").stdout)["id"] == \
        offer["id"]
    assert cli(*node, "offer", "withdraw", offer["id"]).exit_code == 0
    missing = cli(*node, "offer", "create", "tax", "--template", "dp-stats",
                  "--param", "purposes=finance", "--param", "epsilon=2")
    assert missing.exit_code == 2 and "--dp-epsilon-per-query" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"@type": "Offer", "permission": [{"action": "use", "constraint": '
                   '[{"leftOperand": "purpose", "operator": "like", "rightOperand": "x"}]}]}')
    refused = cli(*node, "offer", "create", "tax", "--policy", bad)
    assert refused.exit_code == 3 and "permission[0].constraint[0].operator" in refused.stderr
    assert "docs/policy.md" in refused.stderr  # what to do, not only what is wrong
    opened = open_node(tmp_path / "n")
    opened.close()


def test_a_policy_file_that_is_no_usable_json_is_a_clear_error(cli, tmp_path: Path) -> None:
    from dataspace.samples import SAMPLES_DIR

    cli("init", tmp_path / "n", "--name", "tax")
    node = ["--node", tmp_path / "n"]
    assert cli(*node, "dataset", "add", SAMPLES_DIR / "tax_records.csv", "--name", "tax"
               ).exit_code == 0
    cases = {
        "deep.json": ("[" * 100_000 + "]" * 100_000).encode(),
        "deep_ok_json.json": ("[" * 500 + "]" * 500).encode(),
        "gbk.json": '{"@type": "银行"}'.encode("gbk"),
        "broken.json": b'{"@type": ',
    }
    says = {"deep.json": "nests deeper than 48 levels", "deep_ok_json.json": "nests deeper",
            "gbk.json": "is not UTF-8 JSON", "broken.json": "is not JSON: Expecting value"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        refused = cli(*node, "offer", "create", "tax", "--policy", tmp_path / name)
        assert refused.exit_code == 3 and says[name] in refused.stderr, (name, refused.stderr)
        assert "docs/policy.md" in refused.stderr
    assert json.loads(cli(*node, "offer", "list", "--json").stdout) == []
