"""Sensitive personal information without a checksum (PIPL Art. 28, GB/T 35273-2020 Annex B).

Health (个人健康生理信息), biometrics (个人生物识别信息), religious belief (宗教信仰),
sexual orientation (性取向), criminal records (违法犯罪记录) and personal property
(个人财产信息: income, balances, credit). Each is a :class:`VocabDetector` configured with
Chinese and English header keywords and value vocabularies.
"""

from __future__ import annotations

from dataspace.catalog.classify.base import HeaderVocab
from dataspace.catalog.classify.vocab import VocabDetector

DIAGNOSES_ZH = (
    "高血压", "糖尿病", "冠心病", "心脏病", "哮喘", "肺炎", "结核", "肝炎", "乙肝", "丙肝",
    "艾滋病", "梅毒", "淋病", "抑郁", "焦虑症", "精神分裂", "双相情感", "自闭症", "癌",
    "肿瘤", "白血病", "淋巴瘤", "脑卒中", "中风", "脑梗", "心肌梗", "心衰", "心律失常",
    "慢阻肺", "慢性阻塞性肺", "肝硬化", "肾衰", "尿毒症", "贫血", "痛风", "骨折",
    "阑尾炎", "胃炎", "胃溃疡", "鼻炎", "甲亢", "甲减", "癫痫", "帕金森", "阿尔茨海默",
    "痴呆", "新冠", "流感", "感冒", "发热", "过敏", "皮炎", "湿疹", "关节炎", "椎间盘",
    "白内障", "青光眼", "近视", "妊娠", "不孕", "流产", "残疾", "血脂", "高尿酸",
)
DIAGNOSES_EN = (
    "hypertension", "diabetes", "type 2 diabetes", "asthma", "pneumonia", "tuberculosis",
    "hepatitis b", "hepatitis c", "hiv", "aids", "depression", "anxiety disorder",
    "schizophrenia", "bipolar disorder", "cancer", "leukemia", "lymphoma", "stroke",
    "myocardial infarction", "heart failure", "copd", "cirrhosis", "anemia", "gout",
    "epilepsy", "parkinson's disease", "alzheimer's disease", "dementia", "covid-19",
    "influenza", "arthritis", "cataract", "glaucoma", "pregnancy", "obesity",
)
BLOOD_TYPES = ("A型", "B型", "AB型", "O型", "A型血", "B型血", "AB型血", "O型血", "Rh阴性", "Rh阳性")

HEALTH = VocabDetector(
    category="health",
    evidence="medical terms (diagnoses, ICD-10 codes, blood types)",
    vocab=HeaderVocab(
        zh=("诊断", "病历", "病史", "疾病", "病症", "症状", "过敏", "用药", "处方", "检验",
            "化验", "手术", "住院", "门诊", "体检", "传染病", "既往史", "病种", "血型",
            "健康状况", "残疾", "生育", "核酸", "艾滋", "icd"),
        en=("diagnosis", "diagnoses", "disease", "medical", "allergy",
            "allergies", "medication", "prescription", "symptom", "symptoms", "icd",
            "icd10", "icd_10", "icd_code", "blood_type", "health", "health_status",
            "medical_history", "disability", "lab_result", "hiv", "hiv_status"),
    ),
    terms=(*DIAGNOSES_EN, *BLOOD_TYPES),
    contains=DIAGNOSES_ZH,
    # ICD-10 with a subcategory (E11.9, J45.909): distinctive enough on its own
    patterns=(r"[A-TV-Z][0-9]{2}\.[0-9A-Z]{1,4}",),
    hinted_terms=("A", "B", "AB", "O", "A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-",
                  "阳性", "阴性", "弱阳性", "positive", "negative"),  # a test's result
    hinted_patterns=(r"[A-TV-Z][0-9]{2}(?:\.[0-9A-Z]{0,4})?",),
    rank=15,
)

BIOMETRIC = VocabDetector(
    category="biometric",
    evidence="biometric data (DNA sequences, face/fingerprint templates)",
    vocab=HeaderVocab(
        zh=("指纹", "人脸", "面部", "虹膜", "声纹", "掌纹", "静脉", "基因", "步态", "脸部特征",
            "生物特征", "生物识别"),
        en=("fingerprint", "face", "face_id", "facial", "face_embedding", "face_feature",
            "face_template", "iris", "voiceprint", "palmprint", "biometric", "biometrics",
            "gene", "genome", "genotype", "dna", "retina", "gait"),
    ),
    patterns=(r"[ACGTN]{24,}",),
    hinted_patterns=(
        r"[A-Za-z0-9+/]{64,}={0,2}",  # base64 template
        r"[0-9a-fA-F]{64,}",  # hex template
        r"\[\s*-?\d+(?:\.\d+)?(?:e-?\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?(?:e-?\d+)?){31,}\s*\]",
    ),
    rank=15,
)

RELIGION = VocabDetector(
    category="religion",
    evidence="religion names",
    vocab=HeaderVocab(
        zh=("宗教", "信仰", "教派"),
        en=("religion", "religious", "faith", "denomination", "belief"),
    ),
    terms=(
        "佛教", "道教", "伊斯兰教", "天主教", "基督教", "新教", "东正教", "犹太教", "印度教",
        "锡克教", "喇嘛教", "藏传佛教", "无宗教信仰", "无神论", "佛教徒", "基督徒", "穆斯林",
        "buddhism", "buddhist", "taoism", "taoist", "islam", "muslim", "catholic",
        "catholicism", "christian", "christianity", "protestant", "orthodox", "judaism",
        "jewish", "hindu", "hinduism", "sikh", "sikhism", "atheist", "agnostic",
    ),
    hinted_terms=("无", "none", "other", "其他"),
    rank=15,
)

SEXUAL_ORIENTATION = VocabDetector(
    category="sexual_orientation",
    evidence="sexual orientation terms",
    vocab=HeaderVocab(
        zh=("性取向", "性倾向", "性向"),
        en=("sexual_orientation", "sexuality", "orientation_sexual", "lgbt"),
    ),
    terms=(
        "异性恋", "同性恋", "双性恋", "无性恋", "泛性恋", "heterosexual", "homosexual",
        "bisexual", "asexual", "pansexual", "gay", "lesbian", "straight", "queer",
    ),
    rank=15,
)

CRIMINAL_RECORD = VocabDetector(
    category="criminal_record",
    evidence="criminal-record terms (罪名, sentences)",
    vocab=HeaderVocab(
        zh=("犯罪", "违法", "刑事", "前科", "判决", "罪名", "服刑", "刑期", "行政拘留", "劣迹",
            "失信被执行"),
        en=("criminal", "criminal_record", "conviction", "convictions", "offence", "offense",
            "arrest", "sentence_type", "crime", "felony", "prior_record"),
    ),
    terms=("有前科", "无前科", "前科", "刑满释放", "取保候审", "监视居住"),
    contains=("有期徒刑", "无期徒刑", "死刑", "拘役", "缓刑", "行政拘留", "劳动教养"),
    patterns=(r"[\u4e00-\u9fff]{2,20}罪",),
    hinted_terms=("theft", "fraud", "assault", "robbery", "burglary", "felony",
                  "misdemeanor", "是", "否", "有", "无", "yes", "no"),
    rank=15,
)

FINANCIAL = VocabDetector(
    category="financial",
    evidence="amounts in a personal-finance column (income, balance, credit)",
    vocab=HeaderVocab(
        zh=("收入", "工资", "薪资", "薪水", "月薪", "年薪", "存款", "账户余额", "余额", "负债",
            "贷款", "征信", "信用分", "信用评分", "信用等级", "芝麻分", "个人资产", "房产",
            "公积金", "缴费基数", "逾期"),
        en=("income", "salary", "wage", "wages", "balance", "account_balance", "credit_score",
            "credit_rating", "credit_grade", "loan", "loan_amount", "debt", "deposit",
            "deposits", "net_worth", "mortgage", "overdue", "fico"),
    ),
    hinted_patterns=(
        r"[¥￥$]?\s*-?\d{1,3}(?:,\d{3})*(?:\.\d+)?\s*(?:元|万元|万|CNY|RMB)?",
        r"[¥￥$]?\s*-?\d+(?:\.\d+)?\s*(?:元|万元|万|CNY|RMB)?",
        r"(?:AAA|AA|A|BBB|BB|B|CCC|CC|C|D)[+-]?",
    ),
    rank=5,
    strength=0.6,
)

DETECTORS = (HEALTH, BIOMETRIC, RELIGION, SEXUAL_ORIENTATION, CRIMINAL_RECORD, FINANCIAL)
