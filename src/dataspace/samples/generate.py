"""Generate the sample datasets shipped with dataspace (deterministic: same seed, same bytes).

    python -m dataspace.samples.generate [out_dir]

Four parties of a small-business lending scenario share a pool of companies keyed by their
统一社会信用代码 (USCC): a bank's loans (UTF-8 CSV), a tax bureau's filings (GBK CSV with
Chinese headers), a hospital's visits (JSON Lines) and a grid company's monthly consumption
(Parquet). Every file carries a few nulls, a few invalid values and at least one decoy column
that looks like an identifier but is not one, so that classification and quality have
something to find.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

SEED = 36344
HERE = Path(__file__).resolve().parent

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]  # 3^(i-1) mod 31, i = 1..17
ORG_WEIGHTS = [3, 7, 9, 10, 5, 8, 4, 2]
ID_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]  # 7, 9, 10, 5, 8, 4, 2, 1, 6, 3, ...

AREAS = {
    "110105": "北京市朝阳区",
    "110108": "北京市海淀区",
    "310104": "上海市徐汇区",
    "310115": "上海市浦东新区",
    "330106": "杭州市西湖区",
    "330110": "杭州市余杭区",
    "440305": "深圳市南山区",
    "440106": "广州市天河区",
    "320506": "苏州市吴中区",
    "510107": "成都市武侯区",
    "420106": "武汉市武昌区",
    "370202": "青岛市市南区",
}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国文辉力鹏飞宇浩然子涵欣怡晨阳"
FIRM_WORDS = "华瑞鑫达恒信宏远博创金泰盛和中科天润永安嘉禾锦程联合新纪元启明星辰"
INDUSTRIES = [
    ("科技", "软件和信息技术服务业"),
    ("贸易", "批发业"),
    ("制造", "通用设备制造业"),
    ("建材", "非金属矿物制品业"),
    ("食品", "食品制造业"),
    ("物流", "道路运输业"),
    ("餐饮", "餐饮业"),
    ("纺织", "纺织业"),
]
MOBILE_PREFIXES = "130 131 132 135 136 137 138 139 150 151 152 158 159 166 176 177 180 186 188 199"
ICD10 = [
    ("E11.9", "2型糖尿病"),
    ("I10", "原发性高血压"),
    ("J18.9", "肺炎"),
    ("K29.7", "胃炎"),
    ("M54.5", "腰痛"),
    ("N18.3", "慢性肾脏病3期"),
    ("J06.9", "急性上呼吸道感染"),
    ("F32.9", "抑郁发作"),
    ("C34.9", "支气管和肺恶性肿瘤"),
    ("I25.1", "动脉硬化性心脏病"),
]


def org_check(body: str) -> str:
    """GB 11714 check character of an 8-character organisation code body."""
    total = sum(
        (int(ch) if ch.isdigit() else ord(ch) - 55) * w
        for ch, w in zip(body, ORG_WEIGHTS, strict=True)
    )
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def uscc_check(first17: str) -> str:
    """GB 32100 check character of a 统一社会信用代码."""
    total = sum(USCC_ALPHABET.index(ch) * w for ch, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def id_check(first17: str) -> str:
    """GB 11643 check character of a resident ID number."""
    total = sum(int(ch) * w for ch, w in zip(first17, ID_WEIGHTS, strict=True))
    check = (12 - total % 11) % 11
    return "X" if check == 10 else str(check)


def make_uscc(rng: random.Random, area: str) -> str:
    if rng.random() < 0.5:
        body = "".join(rng.choice("0123456789") for _ in range(8))
    else:
        body = "MA" + "".join(rng.choice(USCC_ALPHABET) for _ in range(6))
    first17 = "91" + area + body + org_check(body)
    return first17 + uscc_check(first17)


def make_id(rng: random.Random, born: dt.date, male: bool) -> str:
    seq = rng.randrange(0, 500) * 2 + (1 if male else 0)
    first17 = rng.choice(list(AREAS)) + born.strftime("%Y%m%d") + f"{seq:03d}"
    return first17 + id_check(first17)


def corrupt_last(rng: random.Random, code: str, alphabet: str) -> str:
    """The same code with a wrong check character."""
    wrong = rng.choice([c for c in alphabet if c != code[-1]])
    return code[:-1] + wrong


def make_mobile(rng: random.Random) -> str:
    return rng.choice(MOBILE_PREFIXES.split()) + f"{rng.randrange(10**8):08d}"


def make_name(rng: random.Random) -> str:
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))
    return rng.choice(SURNAMES) + given


def day(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def companies(rng: random.Random, n: int) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for _ in range(n):
        area = rng.choice(list(AREAS))
        short, industry = rng.choice(INDUSTRIES)
        words = "".join(rng.sample(FIRM_WORDS, 2))
        city = AREAS[area][:2]
        out.append(
            {
                "uscc": make_uscc(rng, area),
                "name": f"{city}{words}{short}有限公司",
                "industry": industry,
                "area": area,
                "district": AREAS[area],
                "rep": make_name(rng),
                "mobile": make_mobile(rng),
            }
        )
    return out


def csv_line(values: Sequence[object]) -> str:
    cells = []
    for v in values:
        text = "" if v is None else str(v)
        if any(ch in text for ch in ',"\n'):
            text = '"' + text.replace('"', '""') + '"'
        cells.append(text)
    return ",".join(cells) + "\n"


def sme_loans(rng: random.Random, firms: list[dict[str, str]], out: Path) -> None:
    header = [
        "loan_id", "企业名称", "统一社会信用代码", "法定代表人", "法人手机号", "loan_amount",
        "annual_rate", "issue_date", "maturity_date", "overdue_90d", "contract_no",
    ]  # fmt: skip
    lines = [csv_line(header)]
    for i in range(700):
        firm = rng.choice(firms)
        issue = day(rng, dt.date(2023, 1, 1), dt.date(2025, 5, 31))
        maturity = issue + dt.timedelta(days=365 * rng.choice((1, 1, 2, 3)))
        code = (
            firm["uscc"] if rng.random() > 0.01 else corrupt_last(rng, firm["uscc"], "0123456789")
        )
        mobile: str | None = firm["mobile"]
        r = rng.random()
        if r < 0.03:
            mobile = None
        elif r < 0.04:
            mobile = firm["mobile"][:10]  # a digit lost in data entry
        # decoy: 18-digit contract numbers (date + branch + serial) that fail the ID check
        contract = issue.strftime("%Y%m%d") + f"{rng.randrange(100, 999)}{i:06d}"
        contract = contract[:17] + str((int(id_check(contract[:17]).replace("X", "10")) + 1) % 10)
        lines.append(
            csv_line(
                [
                    f"LN{issue:%Y}{i + 1:06d}",
                    firm["name"],
                    code,
                    firm["rep"],
                    mobile,
                    round(
                        rng.choice((10, 20, 30, 50, 80, 100, 150, 200, 300, 500))
                        * 10_000
                        * rng.uniform(0.8, 1.2),
                        2,
                    ),
                    round(rng.uniform(3.2, 6.8), 2),
                    issue.isoformat(),
                    None if rng.random() < 0.02 else maturity.isoformat(),
                    1 if rng.random() < 0.06 else 0,
                    contract,
                ]
            )
        )
    out.write_text("".join(lines), encoding="utf-8", newline="")


def tax_records(rng: random.Random, firms: list[dict[str, str]], out: Path) -> None:
    header = [
        "纳税人识别号", "纳税人名称", "所属行业", "纳税信用等级", "开票金额", "零申报月数",
        "申报日期", "主管税务机关",
    ]  # fmt: skip
    lines = [csv_line(header)]
    for firm in firms:
        for quarter in (1, 2):
            filed = day(rng, dt.date(2025, quarter * 3 - 2, 1), dt.date(2025, quarter * 3, 28))
            spelled = filed.isoformat()
            if rng.random() < 0.05:  # a few rows typed by hand
                spelled = f"{filed.year}/{filed.month}/{filed.day}"
            grade = rng.choices("ABMCD", weights=(30, 40, 15, 10, 5))[0]
            invoiced = None if rng.random() < 0.02 else round(rng.lognormvariate(13, 1.1), 2)
            lines.append(
                csv_line(
                    [
                        firm["uscc"],
                        firm["name"],
                        firm["industry"],
                        grade,
                        invoiced,
                        rng.choices(range(4), weights=(80, 10, 6, 4))[0],
                        spelled,
                        f"国家税务总局{firm['district']}税务局",
                    ]
                )
            )
    out.write_bytes("".join(lines).encode("gbk"))


def patients(rng: random.Random, out: Path) -> None:
    lines = []
    for i in range(450):
        male = rng.random() < 0.5
        born = day(rng, dt.date(1940, 1, 1), dt.date(2010, 12, 31))
        ident = make_id(rng, born, male)
        if rng.random() < 0.02:
            ident = corrupt_last(rng, ident, "0123456789")
        icd, label = rng.choice(ICD10)
        phone: str | None = make_mobile(rng) if rng.random() > 0.05 else None
        record = {
            "patient_id": f"P{i + 1:06d}",
            "姓名": make_name(rng),
            "身份证号": ident,
            "性别": "男" if male else "女",
            "出生日期": born.isoformat(),
            "诊断编码": icd,
            "诊断名称": label,
            "就诊日期": day(rng, dt.date(2024, 7, 1), dt.date(2025, 6, 30)).isoformat(),
            "联系电话": phone,
            "费用": round(rng.uniform(50, 8000), 2),
        }
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    out.write_text("".join(lines), encoding="utf-8", newline="")


def grid_power(rng: random.Random, firms: list[dict[str, str]], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    accounts, codes, months, kwh, fees, voltage = [], [], [], [], [], []
    for firm in firms[:220]:
        account = f"0{firm['area'][:3]}{rng.randrange(10**6):06d}"
        level = rng.choice(("低压", "低压", "高压"))
        base = rng.lognormvariate(9, 0.8)
        for month in range(1, 13):
            use = None if rng.random() < 0.01 else round(base * rng.uniform(0.7, 1.3), 1)
            accounts.append(account)
            codes.append(firm["uscc"])
            months.append(dt.date(2024 + (month + 5) // 12, (month + 5) % 12 + 1, 1))
            kwh.append(use)
            fees.append(None if use is None else round(use * 0.68, 2))
            voltage.append(level)
    table = pa.table(
        {
            "户号": pa.array(accounts, pa.string()),
            "统一社会信用代码": pa.array(codes, pa.string()),
            "月份": pa.array(months, pa.date32()),
            "用电量_kwh": pa.array(kwh, pa.float64()),
            "电费_元": pa.array(fees, pa.float64()),
            "电压等级": pa.array(voltage, pa.string()),
        }
    )
    pq.write_table(table, out, compression="zstd")


def main(out_dir: Path = HERE) -> None:
    rng = random.Random(SEED)
    firms = companies(rng, 300)
    out_dir.mkdir(parents=True, exist_ok=True)
    sme_loans(rng, firms, out_dir / "sme_loans.csv")
    tax_records(rng, firms, out_dir / "tax_records.csv")
    patients(rng, out_dir / "patients.jsonl")
    grid_power(rng, firms, out_dir / "grid_power.parquet")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
