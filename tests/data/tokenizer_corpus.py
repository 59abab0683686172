"""Builds the varied, deterministic corpus (over 1 MB) on which Tessera's tokenizer is compared
with tiktoken: prose in many scripts, emoji, numbers, code in several languages (from this
repository, the Python standard library and C headers on the machine), whitespace torture,
contractions in both cases, very long words, and random code points from every plane (assigned
or not, so a Unicode-table difference between regex engines shows up).

documents(seed) returns a list of str; none contains NUL (the CLI's record separator in the
test), and one extra document with NULs is returned by nul_document().
"""
import glob
import os
import random
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROSE = [
    "The quick brown fox jumps over the lazy dog. It wasn't me; they're sure we'd've known.",
    "Le cœur a ses raisons que la raison ne connaît point. L'été dernier, j'ai vu l'océan.",
    "Über allen Gipfeln ist Ruh, in allen Wipfeln spürest du kaum einen Hauch. Straße, Größe.",
    "¿Dónde está la biblioteca? Mañana será otro día, señor Muñoz; ¡qué alegría!",
    "A saudade é uma palavra portuguesa; não há tradução exata. Coração, ação, pão.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Ёлка, щука, объём.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Η γλώσσα μου έδωσαν ελληνική.",
    "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ومغلف بجلد أزرق.",
    "דג סקרן שט בים מאוכזב ולפתע מצא חברה. שלום עולם!",
    "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले विष्णुवतार भगवान श्रीराम।",
    "আমি বাংলায় গান গাই, আমি বাংলার গান গাই। ঢাকা, কলকাতা।",
    "我能吞下玻璃而不伤身体。天地玄黄，宇宙洪荒。日月盈昃，辰宿列张。",
    "いろはにほへと ちりぬるを わかよたれそ つねならむ。東京都渋谷区、カタカナ、ｶﾀｶﾅ。",
    "다람쥐 헌 쳇바퀴에 타고파. 키스의 고유조건은 입술끼리 만나야 하고 특별한 기술은 필요치 않다.",
    "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า กว่าบรรดาฝูงสัตว์เดรัจฉาน",
    "Tiếng Việt có dấu: Chào bạn, hôm nay trời đẹp quá! Đường phố Hà Nội.",
    "Pijamalı hasta yağız şoföre çabucak güvendi. İstanbul, ılık, ÇĞİÖŞÜ.",
    "ქართული ენა ერთ-ერთი უძველესი ენაა. Հայերեն լեզուն գեղեցիկ է։",
    "ሰማይ አይታረስ ንጉሥ አይከሰስ። தமிழ் மொழி மிகவும் பழமையானது. ಕನ್ನಡ ಭಾಷೆ.",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. ÆØÅ æøå þð.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    "Ἐν ἀρχῇ ἦν ὁ λόγος. ℌ𝔢𝔩𝔩𝔬 𝕎𝕠𝕣𝕝𝕕 𝓗𝓮𝓵𝓵𝓸. ﬁﬂ ǅǈǋ Ⅻ ⅷ ½ ² ³ ٣٤٥ ४५६ １２３ ௰",
]

EMOJI = [
    "🌍", "😺", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇪🇸", "🇰🇷", "🇫🇷", "1️⃣", "#️⃣", "❤️", "☕", "🧑🏿‍💻",
    "🫠", "🥲", "🐉", "✨", "🤷‍♀️", "👩🏻‍🔬", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "©️", "™", "🔥🔥🔥", "🎉",
]

CONTRACTIONS = [
    "'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'rE", "'ve", "'VE", "'Ve", "'vE", "'m", "'M",
    "'ll", "'LL", "'Ll", "'lL", "'d", "'D", "'ſ", "'ſt", "'K", "'x", "’s", "'",
]
WORDS_WITH_CONTRACTIONS = [
    "it's", "IT'S", "don't", "DON'T", "they're", "THEY'RE", "we've", "WE'VE", "I'm", "I'M",
    "you'll", "YOU'LL", "he'd", "HE'D", "O'Neil", "rock'n'roll", "y'all", "ma'am", "'tis",
    "dogs'", "James's", "JAMES'S", "l'homme", "can't've", "x'ſ", "Mc'Donald'S", "’twas",
]

WHITESPACE = [" ", "  ", "\t", "\n", "\r", "\r\n", "\n\n", "\u00a0", "\u3000", "\u2028", "\u2029",
              "\u0085", "\u180e", "\u200b", "\u2009", "\x0b", "\x0c", "\u1680", "\u202f", "\u205f",
              "\x1c", "\x1d", "\x1e", "\x1f", "\ufeff", " \n", "\t\n ", "   \t  "]

CODE_SNIPPETS = [
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n    println!(\"{:?}\", v);\n}\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {\n\t\tfmt.Println(i)\n\t}\n}\n",
    "const f = async (x) => { await fetch(`/api/${x}?q=1&r=2`); return x ?? 0; };\n// TODO: fix\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;\n",
    "<html><body><p class=\"x\">Hello &amp; goodbye</p><!-- c --></body></html>\n",
    "#include <stdio.h>\nint main(void){printf(\"%d\\n\", 42);return 0;}\n",
    "public static void main(String[] args) { System.out.println(\"hi\"); }\n",
    "def f(x):\n\treturn {'a': [1, 2.5e-3, None], \"b\": x ** 2}  # comment\n\n\n",
    "$ ls -la | grep '\\.py$' && echo \"done\" >> /tmp/log 2>&1\n",
    "\\begin{equation} e^{i\\pi} + 1 = 0 \\end{equation}\n",
    "    if (a != b && c <= d || !e) { x += 1; y -= 2; z *= 3; w /= 4; }\n",
    "matrix = [[1,2,3],\n          [4,5,6]]\n\t\t\t\n   \n",
]


def random_number(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 40)))
    if kind == 1:
        return "%d.%d" % (rng.randrange(10 ** 6), rng.randrange(10 ** 4))
    if kind == 2:
        return "{:,}".format(rng.randrange(10 ** 12))
    if kind == 3:
        return "-%de%d" % (rng.randrange(1000), rng.randrange(-30, 30))
    if kind == 4:
        return "".join(rng.choice("0123456789٠١٢٣٤٥٦٧٨٩०१२३४५६७८९１２３") for _ in range(rng.randrange(1, 12)))
    return "0x%X" % rng.randrange(1 << 48)


def random_code_point(rng):
    while True:
        plane = rng.random()
        if plane < 0.5:
            cp = rng.randrange(0x80, 0x10000)
        elif plane < 0.8:
            cp = rng.randrange(0x10000, 0x40000)
        else:
            cp = rng.randrange(0x1, 0x110000)
        if 0xD800 <= cp <= 0xDFFF or cp == 0:
            continue
        return chr(cp)


def read_code_files():
    """Source files of several languages, in a fixed order."""
    paths = []
    for pattern in ("core/*.cc", "core/*.h", "data/*.cc", "data/*.h", "trainer/*.cc", "scripts/*.sh",
                    "CMakeLists.txt", "cmake/*.cmake", "configs/*.yaml", "docs/*.md"):
        paths += sorted(glob.glob(os.path.join(ROOT, pattern)))
    stdlib = sysconfig.get_paths()["stdlib"]
    for name in ("json/decoder.py", "textwrap.py", "heapq.py", "string.py", "fractions.py", "csv.py"):
        p = os.path.join(stdlib, name)
        if os.path.exists(p):
            paths.append(p)
    for name in ("stdio.h", "string.h", "stdlib.h", "math.h", "errno.h"):
        p = os.path.join("/usr/include", name)
        if os.path.exists(p):
            paths.append(p)
    texts = []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                texts.append(f.read())
        except (OSError, UnicodeDecodeError):
            pass
    return texts


def documents(seed=20240607, target_bytes=1_200_000):
    rng = random.Random(seed)
    docs = []
    # 1. Prose mixtures.
    for _ in range(300):
        parts = []
        for _ in range(rng.randrange(3, 30)):
            s = rng.choice(PROSE)
            if rng.random() < 0.3:
                words = s.split(" ")
                s = " ".join(rng.sample(words, len(words)))
            if rng.random() < 0.2:
                s = s.upper() if rng.random() < 0.5 else s.lower()
            parts.append(s)
            parts.append(rng.choice([" ", "\n", "\n\n", "  ", " " + rng.choice(EMOJI) + " "]))
        docs.append("".join(parts))
    # 2. Code, whole files and snippets.
    code = read_code_files()
    budget = 350_000
    for text in code:
        if budget <= 0:
            break
        docs.append(text)
        budget -= len(text.encode("utf-8"))
    for _ in range(100):
        docs.append("".join(rng.choice(CODE_SNIPPETS) for _ in range(rng.randrange(1, 8))))
    # 3. Contractions, numbers, emoji and whitespace torture, shuffled together.
    for _ in range(400):
        parts = []
        for _ in range(rng.randrange(5, 80)):
            r = rng.random()
            if r < 0.2:
                parts.append(rng.choice(WORDS_WITH_CONTRACTIONS))
            elif r < 0.3:
                parts.append(rng.choice(["word", "WORD", "x", "", "ab", "Ünï", "日本"]) + rng.choice(CONTRACTIONS))
            elif r < 0.45:
                parts.append(random_number(rng))
            elif r < 0.55:
                parts.append("".join(rng.choice(EMOJI) for _ in range(rng.randrange(1, 4))))
            elif r < 0.8:
                parts.append("".join(rng.choice(WHITESPACE) for _ in range(rng.randrange(1, 12))))
            elif r < 0.9:
                parts.append("".join(rng.choice("!@#$%^&*()-=_+[]{};:'\",.<>?/|`~\\") for _ in range(rng.randrange(1, 9))))
            else:
                parts.append(rng.choice(PROSE).split(" ")[0])
        docs.append("".join(parts))
    # 4. Very long words and runs.
    docs += [
        "a" * 5000, "Ab" * 3000 + " end", "x" + "y" * 20000, "7" * 10001, "!" * 5000 + "a",
        " " * 10000 + "word", "\n" * 5000 + "x", " \t" * 3000, "\r\n" * 2000, "日本語" * 1000,
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(30000)),
        "é" * 4000, "\u0301" * 2000, "a\u0301" * 3000, "ſ" * 100 + "'ſ" * 100,
        "".join(rng.choice(["ab", "ba", "aa", "bb"]) for _ in range(4000)),
        "   leading and trailing   ", "\t\tindent\n\t\tmore\n", "end with spaces   ", "end with newline\n\n",
    ]
    # 5. Random code points from every plane, grouped with separators.
    for _ in range(120):
        parts = []
        for _ in range(rng.randrange(20, 200)):
            parts.append("".join(random_code_point(rng) for _ in range(rng.randrange(1, 6))))
            parts.append(rng.choice([" ", "", "a", "'s", "\n", "1", "A", "\u0300"]))
        docs.append("".join(parts))
    # Fill up to the target with more prose/code mixtures.
    total = sum(len(d.encode("utf-8")) for d in docs)
    while total < target_bytes:
        d = "".join(rng.choice(PROSE + CODE_SNIPPETS + EMOJI + WORDS_WITH_CONTRACTIONS) +
                    rng.choice(WHITESPACE) for _ in range(200))
        docs.append(d)
        total += len(d.encode("utf-8"))
    assert all("\x00" not in d for d in docs)
    return docs


def nul_document():
    return "before\x00after \x00\x00 nul\x00"


if __name__ == "__main__":
    docs = documents()
    sys.stdout.write("%d documents, %d bytes\n" % (len(docs), sum(len(d.encode("utf-8")) for d in docs)))
