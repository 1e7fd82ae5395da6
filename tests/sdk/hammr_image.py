"""hammr 3.8.13's ``image`` command (``hammr/commands/image/image.py``, class ``Image``), loaded on
Python 3 from the sdist, so ``image list/info/download/delete`` run their own code against Satchel
through the SDK.

As in ``hammr_code``: the class's source is cut out of the sdist (``class Image`` up to the next
top-level statement), given line-preserving Python 2 -> 3 replacements (``print x`` statements,
``except X, e:``) and executed in a namespace holding what image.py imports: hammr's own helpers it
calls (cut out of hammr_utils.py, image_utils.py, publish_utils.py), and stand-ins for what needs
Python-2-only packages: ussclicore's ``Cmd``/``CoreGlobal`` (empty bases), ``ArgumentParser``
(argparse raising ``ArgumentParserError``, as ussclicore's does), ``printer`` (recording),
``generics_utils`` (+ ``order_list_object_by``, ``query_yes_no`` answering yes), hurry.filesize's
``size`` and a ``Texttable`` that renders rows with ``str`` (texttable is not installed)."""

import argparse
import os
import re
import shlex
import traceback
import types

import hammr_code
import sdk_loader

HAMMR_UTILS = ("get_uforge_exception", "print_uforge_exception", "handle_uforge_exception",
               "is_uri_based_on_appliance", "is_uri_based_on_scan", "extract_scannedinstance_id",
               "extract_scan_id", "extract_appliance_id")
IMAGE_UTILS = ("get_uid_from_uri", "get_message_from_status")
PUBLISH_UTILS = ("get_publish_status",)

_PY2 = [
    (r"^(\s*)print (?!\()(.+?)\s*$", r"\1print(\2)"),
    (r"except (\w+), (\w+):", r"except \1 as \2:"),
]


class ArgumentParserError(Exception):
    pass


class ArgumentParser(argparse.ArgumentParser):
    """ussclicore.argumentParser.ArgumentParser: errors raise instead of exiting."""

    def error(self, message):
        raise ArgumentParserError(message)


class Texttable:
    """Stand-in for texttable.Texttable: keeps the rows (each cell through ``str``, as texttable
    formats them) and draws them one per line."""

    def __init__(self, max_width=80):
        self.rows = []

    def set_cols_dtype(self, dtypes):
        pass

    def set_cols_align(self, align):
        pass

    def header(self, cells):
        self.rows.insert(0, [str(c) for c in cells])

    def add_row(self, cells):
        self.rows.append([str(c) for c in cells])

    def draw(self):
        return "\n".join(" | ".join(r) for r in self.rows)


def size(n):
    """hurry.filesize.size with its default (traditional) units."""
    for factor, suffix in ((1 << 50, "P"), (1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"),
                           (1 << 10, "K"), (1, "B")):
        if n >= factor:
            break
    return str(int(n / factor)) + suffix


class GenericsUtils(hammr_code.GenericsUtils):
    @staticmethod
    def order_list_object_by(objects, attribute):
        # ussclicore: sorted by the attribute's value
        return sorted(objects, key=lambda o: getattr(o, attribute))

    @staticmethod
    def query_yes_no(question, default="yes"):
        return True


def _class_source(relpath, name):
    path = os.path.join(sdk_loader.hammr_root(), relpath)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    start = [i for i, l in enumerate(lines) if l.startswith("class %s(" % name)]
    assert len(start) == 1, "%s: no single class %s" % (relpath, name)
    i = start[0]
    end = i + 1
    while end < len(lines) and (lines[end] == "" or lines[end][0] in " \t#"):
        end += 1
    text = "\n".join(lines[i:end])
    for pat, rep in _PY2:
        text = re.sub(pat, rep, text, flags=re.M)
    return compile(text, path, "exec")


def load(api, login):
    """hammr's ``Image`` command bound to ``api`` (an SDK ``Api``) and ``login``; returns
    (command, printer)."""
    printer = hammr_code.Printer()
    generics_utils = GenericsUtils(printer)
    utils = {"re": re, "traceback": traceback, "printer": printer,
             "UForgeError": sdk_loader.load().uforge.UForgeError}
    image_utils = types.SimpleNamespace()
    ns = dict(utils)
    for rel, names in ((os.path.join("hammr", "utils", "hammr_utils.py"), HAMMR_UTILS),
                       (os.path.join("hammr", "utils", "publish_utils.py"), PUBLISH_UTILS)):
        exec(hammr_code._functions(rel, names), ns)
    iu = dict(utils)
    exec(hammr_code._functions(os.path.join("hammr", "utils", "image_utils.py"), IMAGE_UTILS), iu)
    for n in IMAGE_UTILS:
        setattr(image_utils, n, iu[n])

    class Cmd:
        def __init__(self):
            pass

    class CoreGlobal:
        pass

    ns.update({"shlex": shlex, "size": size, "Texttable": Texttable,
               "ArgumentParser": ArgumentParser, "ArgumentParserError": ArgumentParserError,
               "Cmd": Cmd, "CoreGlobal": CoreGlobal, "generics_utils": generics_utils,
               "image_utils": image_utils, "download_utils": None})
    exec(_class_source(os.path.join("hammr", "commands", "image", "image.py"), "Image"), ns)
    cmd = ns["Image"]()
    cmd.api = api
    cmd.login = login
    return cmd, printer
