"""Checks of an exported bundle archive: hammr's layout and hammr's own validation rules."""

import ast
import hashlib
import json
import os
import tarfile

import yaml

import sdk_loader

MANIFEST = "manifest.json"


def _safe_members(tar):
    for m in tar.getmembers():
        name = m.name
        assert not name.startswith("/") and ".." not in name.split("/"), \
            "unsafe archive member name %r" % name
        assert m.isfile() or m.isdir(), \
            "archive member %r is neither a regular file nor a directory (type %r)" \
            % (name, m.type)
    return tar.getmembers()


def read_archive(path):
    """{member name without trailing '/': bytes or None for directories}, in archive order."""
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in _safe_members(tar):
            name = m.name.rstrip("/")
            assert name not in out, "duplicate archive member %r" % name
            out[name] = tar.extractfile(m).read() if m.isfile() else None
    return out


def extract(path, dest):
    with tarfile.open(path, "r:gz") as tar:
        _safe_members(tar)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.11.4 (Debian 12 ships 3.11.2); names were checked above
            tar.extractall(dest)


# ------------------------------------------------------------------- hammr's check_bundle

class _Printer:
    """Stand-in for ussclicore.utils.printer: records what hammr would print."""
    ERROR = "ERROR"
    OK = "OK"
    WARNING = "WARNING"
    INFO = "INFO"

    def __init__(self):
        self.messages = []

    def out(self, text, level=None, *args, **kwargs):
        self.messages.append((level, text))


def hammr_check_bundle():
    """hammr 3.8.13's own ``check_bundle``/``check_files`` (hammr/utils/bundle_utils.py).

    bundle_utils does not import on Python 3 (it needs ussclicore, Python 2 only), so the two
    functions are taken verbatim from the sdist's source with ``ast`` and executed with a
    recording printer. Returns ``check(bundle_dict) -> (result, printed_messages)``."""
    path = os.path.join(sdk_loader.hammr_root(), "hammr", "utils", "bundle_utils.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    wanted = {"check_bundle", "check_files"}
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {f.name for f in funcs} == wanted, "hammr's bundle_utils changed shape"
    module = ast.Module(body=funcs, type_ignores=[])

    def check(bundle):
        printer = _Printer()
        ns = {"os": os, "printer": printer}
        exec(compile(module, path, "exec"), ns)
        return ns["check_bundle"](bundle), printer.messages

    return check


def check_bundle_rules(bundle):
    """The same rules as hammr's check_bundle, restated (independent of the hammr sdist)."""
    problems = []
    for key in ("name", "version", "files"):
        if key not in bundle:
            problems.append("no attribute [%s] for [bundle]" % key)
    if problems:
        return problems

    def walk(f, level):
        if "name" not in f:
            problems.append("file without [name]: %r" % (f,))
            return
        if "source" not in f:
            problems.append("file %s without [source]" % f["name"])
            return
        tag = f.get("tag")
        if level > 0 and tag in ("ospkg", "bootscript"):
            problems.append("%s: tag %s must be on the first level" % (f["name"], tag))
        if ("bootOrder" in f or "bootType" in f) and tag != "bootscript":
            problems.append("%s: bootOrder/bootType without tag bootscript" % f["name"])
        if ("ownerGroup" in f or "rights" in f or "symlink" in f) and tag is not None \
                and tag != "softwarefile":
            problems.append("%s: ownerGroup/rights/symlink but tag %s" % (f["name"], tag))
        if f.get("files"):
            if tag is not None and tag != "softwarefile":
                problems.append("%s: has files but tag %s" % (f["name"], tag))
            elif not os.path.isdir(f["source"]):
                problems.append("%s: has files but source %s is not a folder"
                                % (f["name"], f["source"]))
            for sub in f["files"]:
                walk(sub, level + 1)

    for f in bundle["files"]:
        walk(f, 0)
    return problems


# ------------------------------------------------------------------------ the whole check

def flatten_files(files, out=None):
    out = [] if out is None else out
    for f in files:
        out.append(f)
        flatten_files(f.get("files") or [], out)
    return out


def verify_export(path, workdir, expected, fmt):
    """Validates an exported archive against what was uploaded.

    expected: dict with name, version, description (optional), files {relative path inside the
    version folder: bytes}, folders [relative paths], license (filename, bytes) or None,
    logo (filename, bytes) or None. Returns the parsed bundle document."""
    members = read_archive(path)
    doc_name = "bundle.yml" if fmt == "yaml" else "bundle.json"
    other = "bundle.json" if fmt == "yaml" else "bundle.yml"
    assert doc_name in members, "no %s in the archive (members: %s)" % (doc_name, sorted(members))
    assert other not in members, "both bundle.yml and bundle.json in the archive"
    raw = members[doc_name]
    if fmt == "yaml":
        bundle = yaml.safe_load(raw.decode("utf-8"))
    else:
        bundle = json.loads(raw.decode("utf-8"))
    assert isinstance(bundle, dict), "%s is not a mapping: %r" % (doc_name, bundle)

    # -- the bundle document: hammr's keys
    assert bundle.get("name") == expected["name"]
    # a string, not a YAML float: hammr concatenates it into archive paths
    assert bundle.get("version") == expected["version"], \
        "version is %r, expected the string %r" % (bundle.get("version"), expected["version"])
    if expected.get("description") is not None:
        assert bundle.get("description") == expected["description"]
    assert isinstance(bundle.get("files"), list) and bundle["files"], "no files in %s" % doc_name
    base = "bundles/%s/%s/" % (expected["name"], expected["version"])
    all_files = flatten_files(bundle["files"])
    for f in all_files:
        assert "name" in f and "source" in f, "file entry without name/source: %r" % (f,)
        assert f["source"].startswith(base), \
            "source %r is not under hammr's %s layout" % (f["source"], base)
        assert f["source"] in members, "source %r is not an archive member" % f["source"]

    # -- every uploaded file, byte for byte, at its source
    by_rel = {f["source"][len(base):]: f for f in all_files}
    for rel, data in expected["files"].items():
        assert rel in by_rel, "uploaded file %s missing from %s (has %s)" \
            % (rel, doc_name, sorted(by_rel))
        entry = by_rel[rel]
        assert entry["name"] == rel.split("/")[-1]
        got = members[entry["source"]]
        assert got is not None, "%s is a directory in the archive" % entry["source"]
        assert len(got) == len(data) and got == data, \
            "%s differs from the upload (%d bytes vs %d uploaded; sha256 %s vs %s)" % (
                rel, len(got), len(data), hashlib.sha256(got).hexdigest(),
                hashlib.sha256(data).hexdigest())
    for rel in expected.get("folders", []):
        assert rel in by_rel, "folder %s missing from %s" % (rel, doc_name)
        entry = by_rel[rel]
        assert members[entry["source"]] is None, "folder %s is not a directory member" % rel
        children = [c["source"][len(base):] for c in entry.get("files") or []]
        nested = [r for r in expected["files"] if r.startswith(rel + "/")
                  and "/" not in r[len(rel) + 1:]]
        assert sorted(children) == sorted(nested), \
            "folder %s lists %s, expected %s" % (rel, children, nested)
    assert sorted(by_rel) == sorted(list(expected["files"]) + list(expected.get("folders", []))), \
        "%s lists unexpected files: %s" % (doc_name, sorted(by_rel))

    # -- license and logo: beside the version folder, as hammr's bundle create puts them
    root = "bundles/%s/" % expected["name"]
    if expected.get("license"):
        fname, data = expected["license"]
        src = (bundle.get("license") or {}).get("source")
        assert src == root + fname, "license.source is %r, expected %r" % (src, root + fname)
        assert members.get(src) == data, "license content differs"
    else:
        assert "license" not in bundle
    if expected.get("logo"):
        fname, data = expected["logo"]
        src = bundle.get("sourceLogo")
        assert src == root + fname, "sourceLogo is %r, expected %r" % (src, root + fname)
        assert members.get(src) == data, "logo content differs"
    else:
        assert "sourceLogo" not in bundle

    # -- manifest.json: sizes and sha256 of every other regular member
    assert MANIFEST in members, "no manifest.json in the archive"
    manifest = json.loads(members[MANIFEST].decode("utf-8"))
    entries = manifest.get("files") if isinstance(manifest, dict) else manifest
    assert isinstance(entries, list), "manifest.json has no files list: %r" % (manifest,)
    listed = {}
    for e in entries:
        assert e["path"] in members, "manifest lists %r, not in the archive" % e["path"]
        listed[e["path"]] = e
        content = members[e["path"]]
        if content is None:
            continue
        assert int(e["size"]) == len(content), \
            "manifest size of %s is %s, member has %d bytes" % (e["path"], e["size"], len(content))
        assert e["sha256"] == hashlib.sha256(content).hexdigest(), \
            "manifest sha256 of %s does not match the member" % e["path"]
    for name, content in members.items():
        if content is not None and name not in (MANIFEST,):
            if name in ("bundle.yml", "bundle.json"):
                continue
            assert name in listed, "archive member %s missing from manifest.json" % name

    # -- hammr's validation: its own code, and the same rules restated; run where the
    #    archive is extracted since check_files looks at os.path.isdir(source)
    dest = os.path.join(workdir, "extracted-%s" % fmt)
    os.makedirs(dest, exist_ok=True)
    extract(path, dest)
    cwd = os.getcwd()
    os.chdir(dest)
    try:
        problems = check_bundle_rules(json.loads(json.dumps(bundle)))
        assert problems == [], "bundle document breaks hammr's rules: %s" % problems
        result, printed = hammr_check_bundle()(json.loads(json.dumps(bundle)))
        assert result is not None, "hammr's check_bundle rejected %s: %s" % (doc_name, printed)
        assert [m for m in printed if m[0] == _Printer.ERROR] == []
    finally:
        os.chdir(cwd)
    return bundle
