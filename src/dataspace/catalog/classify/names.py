"""姓名 — Chinese personal names (a heuristic: there is no checksum for a name).

A value is a name when it is

* a common single-character surname (单姓, ~300 from the modern frequency lists) followed
  by one or two given-name characters, or
* a compound surname (复姓: 欧阳, 司马, 诸葛, ...) followed by one or two characters, or
* a transliterated minority name: two to four parts of two or more Han characters joined by
  a middle dot (阿依古丽·买买提),

and none of the given-name characters is one that appears in ordinary words far more than
in names (市, 路, 公司, 菜, 车, ...). Two-character values are the riskiest (白菜, 高铁 are
"surname + one character"), so a list of common words and place names that read like
names (成都, 唐山, 平顶山) is excluded as well. Measured precision and recall on the
test set in ``tests/catalog/test_classify_names.py`` are stated in docs/classification.md.
"""

from __future__ import annotations

from dataspace.catalog.classify.base import (
    BaseDetector,
    HeaderVocab,
    all_han,
    compact,
    wordlist,
)

SINGLE_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余"
    "杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯"
    "龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章"
    "鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉"
    "骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦"
    "戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄"
    "丛仲虞敖巩明佘池查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥南班储栗燕楚鄢劳谌奚皮粟冼蔺楼"
    "盘满闻位厉伊仝区郜海阚花权强帅屠豆朴盖练廉禹井祖漆巴丰支卿国狄平计索宣晋相初门云"
    "容敬来扈晁芮都普阙浦戈伏鹿薄邸雍辜羊乌母裘亓修邰赫杭况那宿鲜印逯隆茹诸战慕危玉银"
    "亢嵇哈湛宾戎勾茅利於呼居揭干但尉冶斯元束檀衣信展阴昝智幸奉植衡富尧闭由钮"
)

COMPOUND_SURNAMES = frozenset(
    wordlist(
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 夏侯 轩辕 令狐 端木 独孤 "
    "南宫 西门 百里 呼延 澹台 公冶 太史 申屠 钟离 闻人 赫连 万俟 濮阳 淳于 单于 东郭 拓跋 "
    "司空 仲孙 左丘 梁丘 第五 谷梁 宗政 公羊 羊舌 微生 乐正 壤驷 巫马 段干 漆雕"
    )
)

#: Characters common in words, places and products but rare in given names.
NOT_GIVEN = frozenset(
    "市省县区乡镇村路街巷弄号楼栋室层院所局厅处部科司店厂场站馆库仓港湾桥井门口岛州"
    "行会社团队组网务品货物件包箱盒瓶袋罐桶车机器械表单卡证码线板油菜肉蛋奶茶酒"
    "药病症医疗校班级课题费税款额率量数价钱角吨斤克升次个只条块片份套双对批辆架"
    "台册本页篇节届期周年日时分秒的了吗呢吧啊么是有在不这那们着过及或性"
    "公私际外左右后少旧低短出入买卖租售收支存取付"
    "电气火土木属塑料纸布铜铝锌锡煤矿泥沙灰砖瓦漆胶膜管阀泵柜床桌椅凳"
    "汤饭粥面粉糖盐醋酱葱姜蒜椒菇笋瓜薯芋果汁饮饼糕"
)

#: Two-character words that look like "surname + given character".
COMMON_WORDS = frozenset(
    wordlist(
    "高铁 白菜 金融 石油 黄金 花园 马路 江山 海洋 方法 程序 文化 安全 明天 平安 "
    "高兴 余额 常用 温度 康复 严重 武器 时间 卫生 钱包 韩国 宋体 黄色 白色 蓝色 "
    "华为 万科 龙虾 牛奶 马上 毛衣 方向 成功 成本 和平 国家 信用 利息 元素 高速 "
    "高级 高中 司法 宁静 冷静 明确 南京 海南 云南 江苏 湖南 宋代 唐朝 秦朝 周末 "
    "钟表 童年 包括 管理 甘肃 安装 安排 安静 安徽 孔雀 岳父 岳母 花生 花朵 花卉 "
    "蒙古 田园 林业 武汉 金色 金牌 银色 银牌 江河 海关 海鲜 海外 平均 平时 全部 "
    "全面 全国 全新 应用 应该 连接 连续 计算 计划 时尚 时代 古代 古典 吉利 吉祥 "
    "简单 简历 项目 宫殿 景色 景点 党员 费用 冷冻 卫星 宗教 查询 查看 边界 师傅 "
    "商业 商务 沙发 沙漠 荣誉 丛林 明白 明星 乐观 乐园 南方 班长 燕麦 劳动 皮革 "
    "皮肤 满意 满分 闻名 位置 海报 海岸 权利 强大 强调 豆腐 练习 廉价 祖国 巴士 "
    "丰富 支持 国王 平方 索引 宣传 相关 相同 初始 初级 云端 容量 来源 普通 薄荷 "
    "危险 玉米 银河 信息 信号 展示 展开 富有 幸福 由于 尚未 符合 舒适 纪念 纪律 "
    "梅花 凌晨 季度 成员 成绩 曲线 游戏 游客 辛苦 华夏 华南 华北 房屋 房间 解决 "
    "解释 尤其 阳光 时候 农业 农民 司机 卓越 吉他 简介 项链 麦片 卫视 宗旨 桂花 "
    "应急 边境 和谐 荣获 甄选 仲裁 明细 官方 谈判 惠民 原因 满足 伊朗 强度 帅气 "
    "朴素 丰收 国内 国际 平衡 宣布 晋升 相机 初中 云朵 来自 普及 羊毛 乌龙 母亲 "
    "修改 杭州 宿舍 鲜花 隆重 战争 危机 信任 智能 幸运 衡量 富贵 闭幕 由来 白天 "
    "黄昏 蓝天 红色 绿色 石头 毛巾 龙头 方案 方式 万一 孙子 胡同 罗马 郑重 谢谢 "
    "许可 曾经 肖像 董事 于是 杜鹃 叶子 程度 苏州 丁香 任务 任何 沈阳 钟声 陆地 "
    "汪洋 范围 夏天 夏季 付款 方便 白银 熊猫 江南 段落 雷电 龙舟 史书 陶瓷 黎明 "
    "贺卡 顾客 钱币 严格 武术 莫名 汤圆 常规 温馨 施工 牛仔 安心 齐全 乔木 庞大 "
    "颜色 庄园 章程 欧洲 耿直 关闭 关注 兰花 焦点 左右 柳树 甘草 祝福 宁夏 舒服 "
    "童话 毕业 季节 苗条 骆驼 路线 游泳 鲍鱼 华丽 祁连 牟利 艾滋 明亮 金属 文明 "
    "高温 高峰 华人 龙卷 黄河 长江 马车 方便 何时 林海 梁山 宋词 唐诗 "
        # test results and findings ("阳性" is 阳 + 性)
        "阳性 阴性 正常 异常 "
        # prefecture-level cities and places that read as "surname + given name"
        "成都 南宁 唐山 金华 安庆 包头 吉林 宁波 岳阳 龙岩 黄冈 黄石 林芝 曲靖 贺州 "
        "桂林 吴江 常熟 江阴 平顶山 马鞍山 丽江 云浮 汕尾 梅县 齐齐哈尔 白山 白城 "
        "通化 辽阳 鞍山 丹东 锦州 葛洲坝 武当山 黄山 泰山 华山 衡山 嵩山 庐山"
    )
)


def _given_ok(given: str) -> bool:
    return all(c not in NOT_GIVEN for c in given)


def is_person_name(value: str) -> bool:
    text = compact(value, " \u3000")
    if "·" in text or "•" in text:
        parts = text.replace("•", "·").split("·")
        return 2 <= len(parts) <= 4 and all(len(p) >= 2 and all_han(p) for p in parts) and (
            len(text) <= 20
        )
    if not all_han(text) or not 2 <= len(text) <= 4:
        return False
    if text in COMMON_WORDS:
        return False
    if text[:2] in COMPOUND_SURNAMES and len(text) >= 3:
        return _given_ok(text[2:])
    if len(text) == 4 or text[0] not in SINGLE_SURNAMES:
        return False
    return _given_ok(text[1:])


class PersonNameDetector(BaseDetector):
    category = "person_name_cn"
    rank = 20
    strength = 0.8
    evidence = "Chinese personal names (common surname + 1–2 given-name characters)"
    vocab = HeaderVocab(
        zh=("姓名", "名字", "联系人", "负责人", "法定代表人", "法人代表", "患者", "收件人",
            "收货人", "持卡人", "户主", "监护人姓名"),
        en=("name", "full_name", "person_name", "customer_name", "patient_name",
            "contact_name", "real_name", "xm", "first_name", "last_name", "holder_name"),
        exclude_zh=("公司", "企业", "单位", "机构", "产品", "商品", "文件", "名称", "品牌",
                    "医院", "学校", "银行", "用户名", "账户名", "店"),
        exclude_en=("company", "product", "file", "filename", "table", "brand", "shop",
                    "store", "item", "goods", "project", "host", "hostname", "domain",
                    "user", "username", "city", "org", "organisation", "organization",
                    "dept", "department", "bank", "column", "field", "app", "device",
                    "station", "school", "hospital", "merchant", "vendor", "supplier",
                    "category", "region", "province", "country", "street", "road"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_person_name(value)
