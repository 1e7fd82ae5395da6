#!/usr/bin/env python3
"""Deterministic mixed corpus for the export benchmark.

    python3 bench/make_corpus.py DIR [--size-mib 512] [--seed 20261123] [--force]

Writes a flat directory (every name unique, no subdirectories) of about SIZE MiB:

  * ~3000 small text files of 1-16 KiB: source code (.rs .py .c .go .java .js), prose (.md .txt), logs,
    JSON, YAML, CSV, XML -- built from a Zipf-distributed vocabulary of a few thousand words and
    identifiers, with numbers, hex ids, timestamps and paths, so gzip -6 sees roughly real-world ratios
    (about 3-6x) rather than the 20x+ of a tiny repeated vocabulary;
  * a few large compressible files (application logs, a JSON-lines event dump, a CSV export, a SQL dump);
  * incompressible blobs (random bytes), some named .gz/.tgz/.jpg/.png/.rpm/.zip/.xz with the matching
    magic bytes so they look like real compressed artifacts, some plain .bin/.dat/.img without magic.

About 55% of the bytes are compressible text, 45% incompressible. Output is byte-for-byte the same for the
same (seed, size, generator version) on any machine: each file has its own RNG seeded from (seed, name).

A stamp file DIR/.corpus-stamp records the parameters and this script's hash; if it matches, nothing is regenerated (pass --force
to rebuild). A mismatching or missing stamp wipes the files this script would own and regenerates.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time

GENERATOR_VERSION = 4
STAMP = ".corpus-stamp"
KIB = 1024
MIB = 1024 * 1024

# ------------------------------------------------------------------------------------------------ vocabulary

ENGLISH = """the of and to a in is it you that he was for on are with as his they be at one have this from or
had by hot word but what some we can out other were all there when up use your how said an each she which do
their time if will way about many then them write would like so these her long make thing see him two has look
more day could go come did number sound no most people my over know water than call first who may down side
been now find any new work part take get place made live where after back little only round man year came show
every good me give our under name very through just form sentence great think say help low line differ turn
cause much mean before move right boy old too same tell does set three want air well also play small end put
home read hand port large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father head stand own
page should country found answer school grow study still learn plant cover food sun four between state keep eye
never last let thought city tree cross farm hard start might story saw far sea draw left late run while press
close night real life few north open seem together next white children begin got walk example ease paper group
always music those both mark often letter until mile river car feet care second book carry took science eat
room friend began idea fish mountain stop once base hear horse cut sure watch color face wood main enough plain
girl usual young ready above ever red list though feel talk bird soon body dog family direct pose leave song
measure door product black short numeral class wind question happen complete ship area half rock order fire
south problem piece told knew pass since top whole king space heard best hour better true during hundred five
remember step early hold west ground interest reach fast verb sing listen six table travel less morning ten
simple several vowel toward war lay against pattern slow center love person money serve appear road map rain
rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark machine note wait plan
figure star box noun field rest correct able pound done beauty drive stood contain front teach week final gave
green oh quick develop ocean warm free minute strong special mind behind clear tail produce fact street inch
multiply nothing course stay wheel full force blue object decide surface deep moon island foot system busy test
record boat common gold possible plane stead dry wonder laugh thousand ago ran check game shape equate miss
brought heat snow tire bring yes distant fill east paint language among""".split()

TECH = """request response handler server client bundle artifact export archive upload download stream chunk
buffer worker queue ticket status lease retry backoff timeout deadline session token header payload manifest
checksum digest sha256 offset length range cursor index table column schema migration transaction commit
rollback snapshot replica shard partition cluster node leader follower heartbeat election config option flag
default override resolve parse encode decode serialize deserialize compress decompress deflate inflate gzip tar
blob object store bucket key prefix path file folder directory mount volume image container pod service ingress
route endpoint method version release build deploy pipeline stage job step cache hit miss evict ttl expire
metric counter gauge histogram trace span event log level debug info warn error fatal panic abort signal exit
user group role permission entitlement owner admin tenant account quota limit rate burst window socket
connection pool listener accept read write flush close open seek sync fsync lock unlock mutex atomic channel
sender receiver future task spawn join select poll wake runtime executor thread core cpu memory heap stack
alloc free pointer reference borrow lifetime trait impl struct enum match option result unwrap iterator
closure macro module crate package dependency feature target profile benchmark fixture assert expect mock
""".split()

DECL = {
    "rs": ["let", "let", "let mut", "const"],
    "py": [""],
    "c": ["int", "uint32_t", "size_t", "const char *", "struct %s *"],
    "go": ["var", ""],
    "java": ["final var", "int", "String", "long"],
    "js": ["const", "const", "let"],
}

KEYWORDS = {
    "rs": "fn let mut pub struct enum impl trait match if else for while loop return use mod self Self async await move ref where const static".split(),
    "py": "def class return if elif else for while in not and or import from as with try except finally raise yield lambda None True False self".split(),
    "c": "int char void static const struct return if else for while switch case break unsigned long size_t uint8_t uint32_t NULL sizeof".split(),
    "go": "func var const type struct interface return if else for range switch case go defer chan map nil err package import".split(),
    "java": "public private protected class interface static final void int long String return if else for while new this null try catch throw".split(),
    "js": "function const let var return if else for while class new this null undefined async await import export from try catch throw".split(),
}


def make_vocab(rng, n):
    """English + tech words, plus n pseudo-words built from syllables (the long tail), in Zipf rank order."""
    onsets = "b c d f g h j k l m n p r s t v w z br cr dr fl gr pl pr sh st str th tr ch".split()
    nuclei = "a e i o u ai ea ee ie oo ou".split()
    codas = ["", "", "", "n", "r", "s", "t", "l", "nd", "st", "rk", "ng", "x", "m"]
    made = set()
    while len(made) < n:
        w = "".join(rng.choice(onsets) + rng.choice(nuclei) + rng.choice(codas) for _ in range(rng.randint(1, 3)))
        made.add(w)
    head = ENGLISH[:120] + TECH[:60]
    tail = ENGLISH[120:] + TECH[60:] + sorted(made)
    rng.shuffle(tail)
    return head + tail


class Vocab:
    """The corpus-wide vocabulary: words in Zipf rank order and a population of identifiers."""

    def __init__(self, seed):
        rng = random.Random("vocab-%s" % seed)
        self.words = make_vocab(rng, 2500)
        acc, cw = 0.0, []
        for r in range(len(self.words)):
            acc += 1.0 / (r + 1) ** 1.1
            cw.append(acc)
        self.cw = cw
        self.idents = []
        for _ in range(5000):
            parts = rng.choices(self.words, cum_weights=cw, k=rng.randint(1, 3))
            self.idents.append("_".join(p for p in parts if p.isalpha()) or "x")
        acc, icw = 0.0, []
        for r in range(len(self.idents)):
            acc += 1.0 / (r + 1) ** 0.8
            icw.append(acc)
        self.icw = icw


def styled(s, style):
    if style == "camel":
        p = s.split("_")
        return p[0] + "".join(x.capitalize() for x in p[1:])
    if style == "pascal":
        return "".join(x.capitalize() for x in s.split("_"))
    return s


class Local:
    """What one file talks about: real files reuse a small set of identifiers, log messages and record
    shapes over and over, which is where most of their compressibility comes from."""

    def __init__(self, v, rng):
        self.v = v
        self.pool = list(dict.fromkeys(rng.choices(v.idents, cum_weights=v.icw, k=rng.randint(25, 90))))
        self.topic = v_words(v, rng, 40)
        self._templates = None
        self._schemas = {}

    def words_(self, rng, k):
        w = v_words(self.v, rng, k)
        # a quarter of the words come from the file's topic
        for i in range(k):
            if rng.random() < 0.25:
                w[i] = rng.choice(self.topic)
        return w

    def ident(self, rng, style="snake"):
        if rng.random() < 0.85:
            s = self.pool[min(int(rng.expovariate(1 / 12)), len(self.pool) - 1)]
        else:
            s = rng.choices(self.v.idents, cum_weights=self.v.icw)[0]
        return styled(s, style)

    def templates(self, rng):
        """Log message templates: fixed text with {} slots filled per line."""
        if self._templates is None:
            t = []
            for _ in range(rng.randint(30, 80)):
                words = self.words_(rng, rng.randint(3, 9))
                for _ in range(rng.randint(0, 3)):
                    words.insert(rng.randrange(len(words) + 1), "%s={}" % self.ident(rng))
                t.append(("%s::%s" % (self.ident(rng), self.ident(rng)), " ".join(words)))
            self._templates = t
        return self._templates

    def schema(self, rng, name):
        """A record shape (key, value kind) reused for every record of that type in this file."""
        if name not in self._schemas:
            self._schemas[name] = [(self.ident(rng, "camel"), rng.choice("iiffbhwwsn"))
                                   for _ in range(rng.randint(3, 9))]
        return self._schemas[name]


def v_words(v, rng, k):
    return rng.choices(v.words, cum_weights=v.cw, k=k)


# ------------------------------------------------------------------------------------------------ text kinds

def hexid(rng, n):
    return "%0*x" % (n, rng.getrandbits(4 * n))


def sentence(v, rng):
    w = v.words_(rng, rng.randint(5, 22))
    w[0] = w[0].capitalize()
    if rng.random() < 0.15:
        w.insert(rng.randrange(len(w)), str(rng.randint(2, 2048)))
    if rng.random() < 0.2:
        i = rng.randrange(1, len(w))
        w[i] = w[i] + ","
    return " ".join(w) + rng.choice("....?!")


def gen_prose(v, rng, size, md=False):
    out, n = [], 0
    while n < size:
        if md and rng.random() < 0.12:
            para = "#" * rng.randint(1, 3) + " " + " ".join(v.words_(rng, rng.randint(2, 6))).capitalize()
        elif md and rng.random() < 0.1:
            para = "\n".join("- " + sentence(v, rng) for _ in range(rng.randint(2, 6)))
        elif md and rng.random() < 0.06:
            para = "```\n" + gen_code_lines(v, rng, rng.randint(3, 12), "rs") + "```"
        else:
            para = " ".join(sentence(v, rng) for _ in range(rng.randint(2, 7)))
            # wrap at ~100 columns like real docs
            lines, cur = [], ""
            for word in para.split(" "):
                if len(cur) + len(word) > 99:
                    lines.append(cur)
                    cur = word
                else:
                    cur = cur + " " + word if cur else word
            lines.append(cur)
            para = "\n".join(lines)
        out.append(para + "\n\n")
        n += len(para) + 2
    return "".join(out)


def code_expr(v, rng, lang):
    r = rng.random()
    a, b = v.ident(rng), v.ident(rng)
    if r < 0.25:
        return "%s.%s(%s)" % (a, b, ", ".join(v.ident(rng) for _ in range(rng.randint(0, 3))))
    if r < 0.45:
        return "%s %s %d" % (a, rng.choice("+ - * / % & | ^ << >>".split()), rng.choice([0, 1, 2, 8, 16, 64, 255, 1024, rng.randint(3, 99999)]))
    if r < 0.6:
        return '"%s"' % " ".join(v.words_(rng, rng.randint(1, 6)))
    if r < 0.7:
        return "0x%s" % hexid(rng, rng.choice([2, 4, 8, 16]))
    if r < 0.85:
        return "%s[%s]" % (a, b)
    return "%s(%s, %s)" % (a, b, v.ident(rng))


def gen_code_lines(v, rng, nlines, lang):
    out, depth = [], 0
    ind = "    " if lang in ("rs", "py", "java", "js", "c") else "\t"
    for _ in range(nlines):
        r = rng.random()
        pad = ind * depth
        if r < 0.08 and depth < 4:
            if lang == "py":
                out.append("%sdef %s(%s):" % (pad, v.ident(rng), ", ".join(["self"] + [v.ident(rng) for _ in range(rng.randint(0, 3))])))
            elif lang == "rs":
                out.append("%spub fn %s(&self, %s: %s) -> Result<%s> {" % (pad, v.ident(rng), v.ident(rng), v.ident(rng, "pascal"), v.ident(rng, "pascal")))
            elif lang == "go":
                out.append("%sfunc (s *%s) %s(%s %s) error {" % (pad, v.ident(rng, "pascal"), v.ident(rng, "pascal"), v.ident(rng, "camel"), rng.choice(["string", "int64", "[]byte", "context.Context"])))
            else:
                out.append("%s%s %s(%s) {" % (pad, rng.choice(["static int", "public void", "function", "private long", "const char *"]), v.ident(rng, "camel"), ", ".join(v.ident(rng) for _ in range(rng.randint(0, 3)))))
            depth += 1
        elif r < 0.16 and depth > 0:
            depth -= 1
            if lang != "py":
                out.append(ind * depth + "}")
        elif r < 0.24:
            c = "#" if lang == "py" else "//"
            out.append("%s%s %s" % (pad, c, sentence(v, rng)))
        elif r < 0.32:
            out.append("")
        elif r < 0.42 and depth < 5:
            k = rng.choice(["if", "for", "while", "match" if lang == "rs" else "if"])
            if lang == "py":
                out.append("%s%s %s:" % (pad, k, code_expr(v, rng, lang)))
            else:
                out.append("%s%s (%s) {" % (pad, k, code_expr(v, rng, lang)))
            depth += 1
        else:
            k = rng.choice(DECL[lang])
            if "%s" in k:
                k = k % v.ident(rng)
            lhs = v.ident(rng, rng.choice(["snake", "camel"]))
            end = "" if lang in ("py", "go") else ";"
            if k and rng.random() < 0.5:
                out.append("%s%s %s = %s%s" % (pad, k, lhs, code_expr(v, rng, lang), end))
            elif rng.random() < 0.3:
                out.append("%s%s%s" % (pad, code_expr(v, rng, lang), end))
            else:
                out.append("%s%s = %s%s" % (pad, lhs, code_expr(v, rng, lang), end))
    while depth > 0:
        depth -= 1
        if lang != "py":
            out.append(ind * depth + "}")
    return "\n".join(out) + "\n"


def gen_code(v, rng, size, lang):
    head = {
        "rs": "// SPDX-License-Identifier: Apache-2.0\nuse std::collections::HashMap;\nuse crate::%s::%s;\n\n",
        "py": "# SPDX-License-Identifier: Apache-2.0\nimport os\nfrom .%s import %s\n\n",
        "c": "/* SPDX-License-Identifier: Apache-2.0 */\n#include <stdint.h>\n#include \"%s/%s.h\"\n\n",
        "go": "// SPDX-License-Identifier: Apache-2.0\npackage %s\n\nimport \"%s\"\n\n",
        "java": "// SPDX-License-Identifier: Apache-2.0\npackage com.example.%s;\n\nimport %s;\n\n",
        "js": "// SPDX-License-Identifier: Apache-2.0\nimport { %s } from './%s';\n\n",
    }[lang] % (v.ident(rng), v.ident(rng))
    out, n = [head], len(head)
    while n < size:
        s = gen_code_lines(v, rng, rng.randint(8, 40), lang) + "\n"
        out.append(s)
        n += len(s)
    return "".join(out)


LEVELS = ["DEBUG"] * 3 + ["INFO"] * 8 + ["WARN"] * 2 + ["ERROR"]


class Clock:
    def __init__(self, rng):
        self.t = 1_760_000_000.0 + rng.randint(0, 30_000_000)

    def tick(self, rng):
        self.t += rng.expovariate(1 / 0.35)
        return self.t


def ts(t):
    s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    return "%s.%03dZ" % (s, int((t % 1) * 1000))


def slot(v, rng):
    r = rng.random()
    if r < 0.4:
        return str(rng.randint(0, 10**rng.randint(1, 6)))
    if r < 0.6:
        return v.ident(rng)
    if r < 0.75:
        return hexid(rng, 8)
    if r < 0.9:
        return "%dms" % rng.randint(0, 5000)
    return rng.choice(["true", "false", "none", "ok", "retry"])


def fill(msg, v, rng):
    parts = msg.split("{}")
    return "".join(p + (slot(v, rng) if i < len(parts) - 1 else "") for i, p in enumerate(parts))


def gen_log(v, rng, size, clock=None):
    clock = clock or Clock(rng)
    templates = v.templates(rng)
    hosts = ["10.%d.%d.%d" % (rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)) for _ in range(12)]
    out, n = [], 0
    while n < size:
        t = clock.tick(rng)
        lvl = rng.choice(LEVELS)
        r = rng.random()
        if r < 0.3:
            line = '%s %-5s http: %s %s /api/users/%s/mysoftware/%d%s status=%d bytes=%d took=%dms req=%s\n' % (
                ts(t), lvl, rng.choice(hosts), rng.choice(["GET", "GET", "POST", "PUT", "DELETE"]),
                v.ident(rng), rng.randint(1, 500), rng.choice(["", "/artifacts", "/exports", "/exports/%d/status" % rng.randint(1, 90)]),
                rng.choice([200, 200, 200, 201, 304, 404, 401, 500]), rng.randint(0, 10**6), rng.randint(0, 400), hexid(rng, 16))
        elif r < 0.85:
            mod, msg = templates[min(int(rng.expovariate(1 / 8)), len(templates) - 1)]
            line = "%s %-5s %s: %s\n" % (ts(t), lvl, mod, fill(msg, v, rng))
        elif r < 0.93:
            line = "%s %-5s jobs::worker: job %s attempt=%d lease_until=%s worker=%s-%d\n" % (
                ts(t), lvl, hexid(rng, 8) + "-" + hexid(rng, 4), rng.randint(1, 3),
                ts(t + 30), rng.choice(hosts), rng.randint(0, 7))
        elif lvl in ("WARN", "ERROR"):
            mod, msg = rng.choice(templates)
            line = "%s %-5s %s: %s\n" % (ts(t), lvl, mod, fill(msg, v, rng))
            for _ in range(rng.randint(2, 8)):
                line += "    at %s.%s(%s.java:%d)\n" % (v.ident(rng, "pascal"), v.ident(rng, "camel"), v.ident(rng, "pascal"), rng.randint(10, 900))
        else:
            line = "%s %-5s %s: %s\n" % (ts(t), lvl, rng.choice(templates)[0], sentence(v, rng))
        out.append(line)
        n += len(line)
    return "".join(out)


def json_value(v, rng, depth=0):
    r = rng.random()
    if depth < 2 and r < 0.15:
        return {v.ident(rng, "camel"): json_value(v, rng, depth + 1) for _ in range(rng.randint(1, 4))}
    if depth < 2 and r < 0.22:
        return [json_value(v, rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if r < 0.4:
        return rng.randint(0, 10**rng.randint(1, 9))
    if r < 0.5:
        return round(rng.uniform(-1000, 1000), rng.randint(1, 6))
    if r < 0.58:
        return rng.random() < 0.5
    if r < 0.65:
        return hexid(rng, rng.choice([8, 32, 64]))
    return " ".join(v.words_(rng, rng.randint(1, 5)))


def typed_value(v, rng, kind, clock):
    if kind == "i":
        return rng.randint(0, 10**rng.randint(1, 7))
    if kind == "f":
        return round(rng.uniform(0, 1000), 2)
    if kind == "b":
        return rng.random() < 0.7
    if kind == "h":
        return hexid(rng, 16)
    if kind == "s":
        return rng.choice(["active", "pending", "done", "failed", "archived"])
    if kind == "n":
        return None if rng.random() < 0.6 else v.ident(rng)
    return " ".join(v.words_(rng, rng.randint(1, 4)))


def json_record(v, rng, clock):
    typ = v.ident(rng)
    rec = {"id": rng.randint(1, 10**6), "ts": ts(clock.tick(rng)), "type": typ}
    for key, kind in v.schema(rng, typ):
        rec[key] = typed_value(v, rng, kind, clock)
    if rng.random() < 0.2:
        rec["extra"] = json_value(v, rng, 1)
    return rec


def gen_json(v, rng, size):
    clock, recs, n = Clock(rng), [], 2
    while n < size:
        r = json_record(v, rng, clock)
        recs.append(r)
        n += len(json.dumps(r, indent=2)) + 6
    return json.dumps({"items": recs, "count": len(recs)}, indent=2) + "\n"


def gen_jsonl(v, rng, size):
    clock, out, n = Clock(rng), [], 0
    while n < size:
        s = json.dumps(json_record(v, rng, clock), separators=(",", ":")) + "\n"
        out.append(s)
        n += len(s)
    return "".join(out)


def gen_yaml(v, rng, size):
    out, n = [], 0
    while n < size:
        block = ["%s:" % v.ident(rng)]
        for _ in range(rng.randint(2, 10)):
            val = json_value(v, rng, 2)
            if isinstance(val, bool):
                val = "true" if val else "false"
            block.append("  %s: %s" % (v.ident(rng), val))
        s = "\n".join(block) + "\n"
        out.append(s)
        n += len(s)
    return "".join(out)


def gen_csv(v, rng, size):
    cols = [v.ident(rng) for _ in range(rng.randint(5, 12))]
    kinds = [rng.choice("iifwhd") for _ in cols]
    clock = Clock(rng)
    out = [",".join(cols) + "\n"]
    n = len(out[0])
    while n < size:
        row = []
        for k in kinds:
            if k == "i":
                row.append(str(rng.randint(0, 10**rng.randint(1, 8))))
            elif k == "f":
                row.append("%.4f" % rng.uniform(0, 1e4))
            elif k == "w":
                row.append(" ".join(v.words_(rng, rng.randint(1, 3))))
            elif k == "h":
                row.append(hexid(rng, 12))
            else:
                row.append(ts(clock.tick(rng)))
        s = ",".join(row) + "\n"
        out.append(s)
        n += len(s)
    return "".join(out)


def gen_sql(v, rng, size):
    tables = [v.ident(rng) for _ in range(6)]
    out = ["-- dump of %s\nBEGIN;\n" % v.ident(rng)]
    for t in tables:
        out.append("CREATE TABLE %s (id BIGINT PRIMARY KEY, name TEXT NOT NULL, owner BIGINT, data TEXT, created TIMESTAMP);\n" % t)
    n, clock = sum(map(len, out)), Clock(rng)
    while n < size:
        t = rng.choice(tables)
        rows = ",\n  ".join("(%d, '%s', %d, '%s', '%s')" % (rng.randint(1, 10**8), v.ident(rng), rng.randint(1, 5000),
                                                          " ".join(v.words_(rng, rng.randint(2, 12))), ts(clock.tick(rng)))
                            for _ in range(rng.randint(5, 40)))
        s = "INSERT INTO %s VALUES\n  %s;\n" % (t, rows)
        out.append(s)
        n += len(s)
    out.append("COMMIT;\n")
    return "".join(out)


def gen_xml(v, rng, size):
    root = v.ident(rng, "camel")
    out, n = ['<?xml version="1.0" encoding="UTF-8"?>\n<%s>\n' % root], 60
    while n < size:
        tag = v.ident(rng, "camel")
        attrs = " ".join('%s="%s"' % (v.ident(rng, "camel"), json_value(v, rng, 2)) for _ in range(rng.randint(0, 3)))
        s = "  <%s %s>%s</%s>\n" % (tag, attrs, " ".join(v.words_(rng, rng.randint(1, 8))), tag)
        out.append(s)
        n += len(s)
    out.append("</%s>\n" % root)
    return "".join(out)


SMALL_KINDS = [  # (extension, generator, weight)
    ("rs", lambda v, r, s: gen_code(v, r, s, "rs"), 14),
    ("py", lambda v, r, s: gen_code(v, r, s, "py"), 12),
    ("c", lambda v, r, s: gen_code(v, r, s, "c"), 8),
    ("go", lambda v, r, s: gen_code(v, r, s, "go"), 6),
    ("java", lambda v, r, s: gen_code(v, r, s, "java"), 6),
    ("js", lambda v, r, s: gen_code(v, r, s, "js"), 8),
    ("md", lambda v, r, s: gen_prose(v, r, s, md=True), 10),
    ("txt", lambda v, r, s: gen_prose(v, r, s), 6),
    ("log", lambda v, r, s: gen_log(v, r, s), 10),
    ("json", gen_json, 10),
    ("yaml", gen_yaml, 5),
    ("csv", gen_csv, 3),
    ("xml", gen_xml, 2),
]


def fit(text, size):
    """Exactly `size` bytes of the generated text (generators overshoot a little; cut at the byte)."""
    b = text.encode()
    if len(b) < size:  # generators are asked for size; pad defensively with a newline run
        b += b"\n" * (size - len(b))
    return b[:size]


def write_text(path, v, rng, gen, size, piece=4 * MIB):
    """Generate in pieces so memory stays small for large files."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            k = min(left, piece)
            f.write(fit(gen(v, rng, k), k))
            left -= k


# ------------------------------------------------------------------------------------------------ blobs

def magic_for(ext, rng):
    if ext in ("gz", "tgz"):
        return b"\x1f\x8b\x08\x00" + rng.getrandbits(32).to_bytes(4, "little") + b"\x00\x03"
    if ext == "jpg":
        return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    if ext == "png":
        return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    if ext == "rpm":
        name = b"satchel-bench-1.0-1.x86_64"
        return b"\xed\xab\xee\xdb\x03\x00\x00\x00\x00\x01" + name + b"\x00" * (66 - len(name))
    if ext == "zip":
        return b"PK\x03\x04\x14\x00\x00\x00\x08\x00"
    if ext == "xz":
        return b"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46"
    return b""


def write_blob(path, rng, ext, size, piece=4 * MIB):
    head = magic_for(ext, rng)[:size]
    with open(path, "wb") as f:
        f.write(head)
        left = size - len(head)
        while left > 0:
            k = min(left, piece)
            f.write(rng.randbytes(k))
            left -= k


# ------------------------------------------------------------------------------------------------ plan

def plan(size_mib, seed):
    """The list of (name, kind, ext, size) -- pure, so the stamp can hash it."""
    total = size_mib * MIB
    rng = random.Random("plan-%s-%d" % (seed, size_mib))
    scale = min(1.0, size_mib / 512)
    n_small = max(20, round(3000 * scale))
    compressible = int(total * 0.55)
    incompressible = total - compressible

    files = []
    exts = [k[0] for k in SMALL_KINDS]
    weights = [k[2] for k in SMALL_KINDS]
    small_total = 0
    for i in range(n_small):
        ext = rng.choices(exts, weights=weights)[0]
        size = int(KIB * 16 ** rng.random())  # log-uniform 1..16 KiB, mean ~5.4 KiB
        small_total += size
        files.append(("%s-%04d.%s" % (rng.choice(["src", "lib", "util", "test", "doc", "conf", "data", "mod"]), i, ext), "small", ext, size))

    # a few large compressible files take the rest of the compressible budget
    big_kinds = [("app-server.log", "log", 0.30), ("events.jsonl", "jsonl", 0.22), ("access-worker.log", "log", 0.18),
                 ("orders-export.csv", "csv", 0.12), ("db-dump.sql", "sql", 0.10), ("handbook.md", "md", 0.08)]
    big_budget = max(0, compressible - small_total)
    used = 0
    for i, (name, kind, frac) in enumerate(big_kinds):
        size = big_budget - used if i == len(big_kinds) - 1 else int(big_budget * frac)
        used += size
        if size > 0:
            files.append((name, "big", kind, size))

    # incompressible: a spread of sizes; a few plain random files without magic (detected by sampling)
    blob_specs = [("release-bundle.tgz", 0.16), ("vm-disk.img", 0.14), ("photos-2026.zip", 0.10),
                  ("satchel-agent-1.4.2.x86_64.rpm", 0.08), ("dataset.bin", 0.08), ("backup.xz", 0.06),
                  ("libs-cache.tar.gz", 0.06), ("firmware.dat", 0.04)]
    rest = 1.0 - sum(f for _, f in blob_specs)  # ~28% in ~40 medium artifacts of 1-8 MiB-ish
    n_med = max(4, round(40 * scale))
    med_exts = ["jpg", "png", "gz", "rpm", "zip", "bin", "xz", "jpg", "gz", "dat"]
    fracs = [rng.uniform(0.5, 1.5) for _ in range(n_med)]
    s = sum(fracs)
    for j in range(n_med):
        ext = med_exts[j % len(med_exts)]
        blob_specs.append(("asset-%03d.%s" % (j, ext), rest * fracs[j] / s))
    used = 0
    for i, (name, frac) in enumerate(blob_specs):
        size = incompressible - used if i == len(blob_specs) - 1 else int(incompressible * frac)
        used += size
        ext = name.rsplit(".", 1)[1]
        files.append((name, "blob", ext, size))
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--force", action="store_true", help="regenerate even if the stamp matches")
    a = ap.parse_args()
    if a.size_mib < 4:
        sys.exit("--size-mib must be at least 4")

    files = plan(a.size_mib, a.seed)
    stamp = {
        "generator": GENERATOR_VERSION,
        # any edit of this script changes the corpus definition
        "script_sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest(),
        "seed": a.seed,
        "size_mib": a.size_mib,
        "files": len(files),
        "bytes": sum(f[3] for f in files),
        "plan_sha256": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
    }
    stamp_path = os.path.join(a.dir, STAMP)
    if not a.force and os.path.exists(stamp_path):
        try:
            with open(stamp_path) as f:
                if json.load(f) == stamp:
                    print("corpus %s up to date (%d files, %.1f MiB)" % (a.dir, stamp["files"], stamp["bytes"] / MIB))
                    return
        except (OSError, ValueError):
            pass

    # (Re)generate: clear the directory's contents first -- only if it is empty or one of our corpora
    # (has a stamp, possibly of another version), so a mistyped DIR never loses anyone's files.
    if os.path.isdir(a.dir) and os.listdir(a.dir):
        if not any(n.startswith(".corpus-stamp") or n.startswith(".stamp-") for n in os.listdir(a.dir)) and not a.force:
            sys.exit("%s is not empty and has no %s: refusing to overwrite (use an empty dir or --force)" % (a.dir, STAMP))
        for n in os.listdir(a.dir):
            p = os.path.join(a.dir, n)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
    os.makedirs(a.dir, exist_ok=True)

    t0 = time.time()
    vocab = Vocab(a.seed)
    gens = {k[0]: k[1] for k in SMALL_KINDS}
    gens.update({"log": lambda v, r, s: gen_log(v, r, s), "jsonl": gen_jsonl, "csv": gen_csv, "sql": gen_sql,
                 "md": lambda v, r, s: gen_prose(v, r, s, md=True)})
    for i, (name, kind, ext, size) in enumerate(files):
        rng = random.Random("%s-%s" % (a.seed, name))
        v = Local(vocab, rng)
        path = os.path.join(a.dir, name)
        if kind == "blob":
            write_blob(path, rng, ext, size)
        elif kind == "big":
            # one clock per big log so timestamps keep increasing across pieces
            if ext == "log":
                clock = Clock(rng)
                write_text(path, v, rng, lambda v, r, s: gen_log(v, r, s, clock), size)
            else:
                write_text(path, v, rng, gens[ext], size)
        else:
            write_text(path, v, rng, gens[ext], size)
    with open(stamp_path, "w") as f:
        json.dump(stamp, f, indent=2)
        f.write("\n")
    n_small = sum(1 for f in files if f[1] == "small")
    comp = sum(f[3] for f in files if f[1] != "blob")
    print("corpus %s: %d files (%d small), %.1f MiB, %.0f%% compressible by bytes, generated in %.1fs"
          % (a.dir, len(files), n_small, stamp["bytes"] / MIB, 100 * comp / stamp["bytes"], time.time() - t0))


if __name__ == "__main__":
    main()
