#!/usr/bin/env python3
"""Extracts the detection corpus from unpacked packages (see
detection-corpus.sh): attacks.jsonl and benign.jsonl, one JSON object per
line, sorted, so the same package versions give the same bytes.

Generation 1 is the first corpus; generation 2 (items with "gen": 2) was
added after generation 1's held-out items had been inspected. A gen-2 item
whose text is already in generation 1 or in seeds.jsonl is left out."""
import glob, hashlib, json, os, re, sys
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

def write(name, rows, rows2, key):
    """rows are generation 1, rows2 generation 2 (their texts differ)."""
    seen, outl = set(), []
    for cls, src, s, gen in sorted([r + (1,) for r in rows] + [r + (2,) for r in rows2]):
        if (cls, s) in seen:
            continue
        seen.add((cls, s))
        o = {"class": cls, "source": src, key: s}
        if gen > 1:
            o["gen"] = gen
        outl.append(json.dumps(o, ensure_ascii=False, sort_keys=True))
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        f.write("\n".join(outl) + "\n")
    print(name, len(outl), "(gen 2: %d)" % len(rows2), file=sys.stderr)
write("attacks.jsonl", attacks, attacks2, "payload")
write("benign.jsonl", benign, benign2, "value")
