"""Fetches the real UForge Python SDK (and hammr) from PyPI and loads it on Python 3.

Nothing of the SDK is committed here. At test time the sdists are downloaded into a cache
directory ($SATCHEL_SDK_CACHE, default <repo>/target/sdk-cache), checked against pinned
sha256 sums, and extracted. Then:

* ``uforge/objects/uforge.py`` (the generated pyxb bindings) is imported as is, with
  ``pyxb.__version__`` set to the 1.2.4 the bindings were generated with (pyxb-x 1.2.6 is
  API compatible; the file refuses any other version string).
* ``uforge/application.py`` (transport + route classes) is Python 2. It is ported in memory by
  a few textual, line-preserving replacements (so tracebacks point at the right lines of the
  original file) and executed as module ``uforge.application``. ``_Objects.parseString`` and
  ``_REST`` keep their exact behaviour.

Usage from a shell: ``python sdk_loader.py --prepare`` downloads + extracts (idempotent).
"""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import types
import urllib.parse
import urllib.request

SDK_NAME = "uforge-python-sdk"
SDK_VERSION = "3.8.13"
SDK_SDIST = "uforge_python_sdk-3.8.13.tar.gz"
SDK_SHA256 = "705f1aa3c49edcfd821cda98d8b8c6c61cbb146ee4430009492d4a5c098e7aae"

HAMMR_NAME = "hammr"
HAMMR_VERSION = "3.8.13"
HAMMR_SDIST = "hammr-3.8.13.tar.gz"
HAMMR_SHA256 = "89748e527d0e12ea0b32d15946c53a86aced14a649408bf21574b04045bf228f"

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def cache_dir():
    d = os.environ.get("SATCHEL_SDK_CACHE") or os.path.join(REPO, "target", "sdk-cache")
    os.makedirs(d, exist_ok=True)
    return d


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_with_pip(name, version, dest):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "-d", dest, "%s==%s" % (name, version)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return r.returncode == 0, r.stdout.decode("utf-8", "replace")


def _download_from_simple_index(name, filename, dest):
    """Fallback when pip cannot prepare the (Python 2) sdist's metadata: the index's simple
    API (PEP 691 JSON) names the sdist's URL, fetched directly (sha256 checked by the caller)."""
    index = (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")
    req = urllib.request.Request("%s/%s/" % (index, name),
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        meta = json.load(r)
    for f in meta.get("files", []):
        if f["filename"] == filename:
            url = urllib.parse.urljoin("%s/%s/" % (index, name), f["url"])
            tmp = os.path.join(dest, filename + ".part")
            with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as out:
                while True:
                    b = r.read(1 << 20)
                    if not b:
                        break
                    out.write(b)
            os.replace(tmp, os.path.join(dest, filename))
            return
    raise RuntimeError("%s: no file %s on the index %s" % (name, filename, index))


def fetch_sdist(name, version, filename, sha256):
    """Returns the directory the sdist was extracted to (idempotent)."""
    cache = cache_dir()
    archive = os.path.join(cache, filename)
    root = os.path.join(cache, filename[: -len(".tar.gz")])
    marker = os.path.join(root, ".extracted-ok")
    if os.path.exists(marker):
        return root
    if not (os.path.exists(archive) and _sha256(archive) == sha256):
        ok, out = _download_with_pip(name, version, cache)
        if not ok or not os.path.exists(archive):
            sys.stderr.write("pip download of %s==%s failed, trying the index's simple API:\n"
                             "%s\n" % (name, version, out[-2000:]))
            _download_from_simple_index(name, filename, cache)
    got = _sha256(archive)
    if got != sha256:
        raise RuntimeError("%s: sha256 %s, expected %s" % (archive, got, sha256))
    with tarfile.open(archive, "r:gz") as t:
        for m in t.getmembers():
            if m.name.startswith("/") or ".." in m.name.split("/"):
                raise RuntimeError("unsafe member %r in %s" % (m.name, archive))
        t.extractall(cache)
    open(marker, "w").close()
    return root


def sdk_root():
    return fetch_sdist(SDK_NAME, SDK_VERSION, SDK_SDIST, SDK_SHA256)


def hammr_root():
    return fetch_sdist(HAMMR_NAME, HAMMR_VERSION, HAMMR_SDIST, HAMMR_SHA256)


# --------------------------------------------------------------------- the Python 3 port

# (pattern, replacement, expected number of substitutions or None for "at least one")
_PORT_RULES = [
    # `import objects` is the package uforge/objects; it is injected as a global instead.
    (r"^import objects$", "objects = _satchel_objects_package", 1),
    (r"^import StringIO$", "import io, base64", 1),
    (r"^import urllib$", "import urllib.parse as urllib", 1),
    (r"^import ConfigParser$", "import configparser as ConfigParser", 1),
    (r"^reload\(sys\)$", "pass", 1),
    (r"^sys\.setdefaultencoding\('utf-8'\)$", "pass", 1),
    (r"config\.readfp\(", "config.read_file(", 1),
    (r"<>", "!=", None),
    (r"hmac\.new\(secretkey, url, sha1\)",
     "hmac.new(_b(secretkey), _b(url), sha1)", 1),
    (r"hashed\.digest\(\)\.encode\(\"base64\"\)",
     "base64.encodebytes(hashed.digest()).decode('ascii')", 1),
    (r"type\(body\) is not file", "not isinstance(body, io.IOBase)", 1),
    (r"type\(streamingResponseFile\) is file", "isinstance(streamingResponseFile, io.IOBase)", 1),
    (r"^(\s*)print (\"[^\"]*\")\s*$", r"\1print(\2)", 1),
]

_PRELUDE = "def _b(s):\n    return s if isinstance(s, bytes) else str(s).encode('utf-8')\n"


def port_application_source(src):
    out = src
    for pat, rep, expected in _PORT_RULES:
        out, n = re.subn(pat, rep, out, flags=re.M)
        if (expected is None and n == 0) or (expected is not None and n != expected):
            raise RuntimeError("porting application.py: rule %r applied %d times (expected %s)"
                               % (pat, n, expected or ">=1"))
    if out.count("\n") != src.count("\n"):
        raise RuntimeError("porting application.py changed its line count")
    # The helper goes after the original text, so line numbers stay those of the original
    # file; it is only called at request time, when the whole module has run.
    return out + "\n" + _PRELUDE


_loaded = None


def load():
    """Returns a namespace with ``application`` (ported SDK), ``objects`` (the package whose
    only public member is the bindings module ``uforge``, like the original) and ``uforge``
    (the bindings module itself). Loaded once per process: pyxb registers the namespace."""
    global _loaded
    if _loaded is not None:
        return _loaded
    root = sdk_root()
    pkg_dir = os.path.join(root, "uforge")

    import pyxb
    pyxb.__version__ = "1.2.4"  # the generated bindings check this exact string

    # uforge (package) / uforge.objects (package) / uforge.objects.uforge (bindings)
    pkg = types.ModuleType("uforge")
    pkg.__path__ = [pkg_dir]
    pkg.__file__ = os.path.join(pkg_dir, "__init__.py")
    objects_pkg = types.ModuleType("uforge.objects")
    objects_pkg.__path__ = [os.path.join(pkg_dir, "objects")]
    objects_pkg.__file__ = os.path.join(pkg_dir, "objects", "__init__.py")
    objects_pkg.__all__ = ["uforge"]
    sys.modules["uforge"] = pkg
    sys.modules["uforge.objects"] = objects_pkg
    bindings_path = os.path.join(pkg_dir, "objects", "uforge.py")
    spec = importlib.util.spec_from_file_location("uforge.objects.uforge", bindings_path)
    bindings = importlib.util.module_from_spec(spec)
    sys.modules["uforge.objects.uforge"] = bindings
    spec.loader.exec_module(bindings)
    objects_pkg.uforge = bindings
    pkg.objects = objects_pkg

    app_path = os.path.join(pkg_dir, "application.py")
    with open(app_path, encoding="utf-8") as f:
        src = port_application_source(f.read())
    app = types.ModuleType("uforge.application")
    app.__file__ = app_path
    app.__dict__["_satchel_objects_package"] = objects_pkg
    sys.modules["uforge.application"] = app
    exec(compile(src, app_path, "exec"), app.__dict__)
    pkg.application = app

    _loaded = types.SimpleNamespace(application=app, objects=objects_pkg, uforge=bindings,
                                    root=root)
    return _loaded


if __name__ == "__main__":
    if "--prepare" in sys.argv:
        print("uforge-python-sdk: %s" % sdk_root())
        print("hammr:             %s" % hammr_root())
        ns = load()
        print("SDK loaded: Api=%r, bindings=%s" % (ns.application.Api, ns.uforge.__file__))
    else:
        print(__doc__)
