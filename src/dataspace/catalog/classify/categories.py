"""The category registry: every category id the classifier can emit or an operator can assign.

``pi_class`` uses the terms of PIPL and GB/T 35273-2020: ``sensitive_personal``
(敏感个人信息, PIPL Art. 28 / GB/T 35273 Annex B), ``personal`` (个人信息, Annex A),
``organisation`` (identifiers of legal persons and other organisations) and ``none``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

PI_CLASSES = ("sensitive_personal", "personal", "organisation", "none")


@dataclass(frozen=True)
class CategoryInfo:
    id: str
    label: str
    pi_class: str
    sensitive: bool
    identifier: bool
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "pi_class": self.pi_class,
            "sensitive": self.sensitive,
            "identifier": self.identifier,
            "description": self.description,
        }


def _c(id: str, label: str, pi_class: str, identifier: bool, description: str) -> CategoryInfo:
    return CategoryInfo(id, label, pi_class, pi_class == "sensitive_personal", identifier,
                        description)


_ALL = (
    _c("id_card_cn", "居民身份证号 (resident ID number)", "sensitive_personal", True,
       "18-digit PRC resident ID number, GB 11643 (个人身份信息)"),
    _c("passport", "护照号码 (passport number)", "sensitive_personal", True,
       "PRC passport number (个人身份信息)"),
    _c("bank_card", "银行卡号 (bank card number)", "sensitive_personal", True,
       "payment card number, Luhn-checked (金融账户, 个人财产信息)"),
    _c("mobile_cn", "手机号码 (mobile phone number)", "personal", True,
       "mainland China mobile number (个人基本资料)"),
    _c("email", "电子邮件地址 (email address)", "personal", True,
       "email address (个人基本资料)"),
    _c("vehicle_plate_cn", "机动车号牌 (vehicle plate number)", "personal", True,
       "mainland vehicle registration plate"),
    _c("ipv4", "IPv4地址 (IPv4 address)", "personal", True,
       "IPv4 address (网络身份标识 / 个人上网记录)"),
    _c("ipv6", "IPv6地址 (IPv6 address)", "personal", True,
       "IPv6 address (网络身份标识 / 个人上网记录)"),
    _c("person_name_cn", "姓名 (personal name)", "personal", True,
       "Chinese personal name (个人基本资料)"),
    _c("address_cn", "地址 (postal address)", "personal", False,
       "street address down to the house number (个人基本资料)"),
    _c("geo_point", "位置坐标 (location coordinates)", "personal", False,
       "latitude/longitude with fewer than 4 decimals"),
    _c("geo_point_precise", "精准定位 (precise location)", "sensitive_personal", False,
       "latitude/longitude to 4+ decimals (精准定位信息, 行踪轨迹)"),
    _c("health", "医疗健康信息 (health information)", "sensitive_personal", False,
       "diagnoses, ICD-10 codes, medication, blood type (个人健康生理信息)"),
    _c("biometric", "生物识别信息 (biometric data)", "sensitive_personal", False,
       "fingerprints, face, iris, voiceprint, genes (个人生物识别信息)"),
    _c("religion", "宗教信仰 (religious belief)", "sensitive_personal", False,
       "religion or belief (PIPL Art. 28)"),
    _c("sexual_orientation", "性取向 (sexual orientation)", "sensitive_personal", False,
       "sexual orientation (GB/T 35273 Annex B)"),
    _c("criminal_record", "违法犯罪记录 (criminal record)", "sensitive_personal", False,
       "offences, convictions, sentences (GB/T 35273 Annex B)"),
    _c("financial", "个人财产信息 (income, balances, credit)", "sensitive_personal", False,
       "income, deposits, balances, loans, credit scores (GB/T 35273 Annex B)"),
    _c("minor", "不满十四周岁未成年人信息 (data of minors under 14)", "sensitive_personal", False,
       "personal information of children under fourteen (PIPL Art. 28)"),
    _c("marital", "婚史 (marital history)", "sensitive_personal", False,
       "marital status and history (GB/T 35273 Annex B)"),
    _c("ethnicity", "民族 (ethnic group)", "personal", False,
       "ethnic group (GB/T 35273 Annex A, 个人基本资料)"),
    _c("gender", "性别 (gender)", "personal", False,
       "gender (GB/T 35273 Annex A, 个人基本资料)"),
    _c("uscc", "统一社会信用代码 (unified social credit code)", "organisation", True,
       "organisation identifier, GB 32100"),
    _c("none", "无 (not personal)", "none", False,
       "checked and found not to be personal or organisation data (operator override)"),
)

CATEGORIES: Mapping[str, CategoryInfo] = MappingProxyType({c.id: c for c in _ALL})


def category_info(category: str) -> CategoryInfo:
    """The registry entry; ``KeyError`` names the known ids."""
    try:
        return CATEGORIES[category]
    except KeyError:
        raise KeyError(
            f"unknown category {category!r}; known: {', '.join(sorted(CATEGORIES))}"
        ) from None


def is_sensitive(category: str) -> bool:
    """True for sensitive personal information (PIPL Art. 28)."""
    info = CATEGORIES.get(category)
    return info is not None and info.sensitive


def is_personal(category: str) -> bool:
    """True for any personal information (an address, a gender) and for any identifier (an
    organisation's too): what profiles redact and pseudonymized transfers replace."""
    info = CATEGORIES.get(category)
    return info is not None and (info.pi_class != "none" or info.identifier)


def is_identifier(category: str) -> bool:
    """True when a value on its own points at one person or organisation."""
    info = CATEGORIES.get(category)
    return info is not None and info.identifier
