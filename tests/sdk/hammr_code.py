"""hammr 3.8.13's own helper functions, loaded on Python 3 from the hammr sdist.

hammr is Python 2 code and needs ussclicore (Python 2 only, not fetched), so its modules do not
import here. Instead the functions the tests need are cut out of the sdist's source text, function
by function (top-level ``def`` up to the next top-level statement), given two line-preserving
Python 2 -> 3 replacements (``print "..."`` statements, ``except X, e:``), and executed in a
namespace holding what their modules import: ``os``, ``ntpath``, ``json``, ``yaml``, hammr's own
``constants`` module (executed from the sdist, with ``TMP_WORKING_DIR`` pointed at a test
directory), a recording ``printer`` and a ``generics_utils`` stand-in (below: ussclicore 1.x's
functions those call, restated for Python 3)."""

import json
import ntpath
import os
import re
import types

import yaml

import sdk_loader

BUNDLE_UTILS = ("check_bundle", "check_files", "recursively_append_to_archive",
                "process_files_from_folder", "add_file_to_archive_and_update_file_source",
                "build_file_tar_path")
HAMMR_UTILS = ("check_mandatory_stack", "check_extension_is_json", "validate",
               "validate_configurations_file", "validate_bundle", "dump_data_in_file",
               "get_uforge_exception")

# (pattern, replacement): Python 2 syntax met in the functions above.
_PY2 = [
    (r"^(\s*)print (\"[^\"\n]*\")\s*$", r"\1print(\2)"),
    (r"except (\w+), (\w+):", r"except \1 as \2:"),
]


class Printer:
    """Stand-in for ussclicore.utils.printer: records what hammr would print."""
    ERROR = "ERROR"
    OK = "OK"
    WARNING = "WARNING"
    INFO = "INFO"

    def __init__(self):
        self.messages = []

    def out(self, text, level=None, *args, **kwargs):
        self.messages.append((level, text))

    def errors(self):
        return [t for (lvl, t) in self.messages if lvl == self.ERROR]


class GenericsUtils:
    """ussclicore.utils.generics_utils, the functions hammr's code above calls (Python 3)."""

    def __init__(self, printer):
        self.printer = printer

    @staticmethod
    def remove_URI_forbidden_char(string):
        # ussclicore: re.sub(' ', '_', string)
        return re.sub(" ", "_", string)

    @staticmethod
    def get_file(uri, dest_file_name=None):
        # ussclicore: a remote URL is downloaded; a local path goes through urllib.urlretrieve,
        # which for a plain local path returns that path unchanged.
        assert not re.match(r"^(?:http|ftp)s?://", uri, re.I), "remote files are not used here"
        return uri if os.path.exists(uri) else None

    @staticmethod
    def extract_id(uri):
        elements = uri.split("/")
        return elements[len(elements) - 1]

    def check_json_syntax(self, file):
        try:
            with open(file) as f:
                data = json.load(f)
            self.printer.out("Syntax of template file [" + file + "] is ok", Printer.OK)
            return data
        except ValueError as e:
            self.printer.out("Syntax of template file [" + file + "] FAILED", Printer.ERROR)
            self.printer.out("JSON parsing error: " + str(e))
        except IOError as e:
            self.printer.out("File error: " + str(e), Printer.ERROR)

    def check_yaml_syntax(self, file):
        # ussclicore: yaml.load of the file (safe_load here: the descriptors are plain data)
        try:
            with open(file) as f:
                data = yaml.safe_load(f)
            self.printer.out("Syntax of template file [" + file + "] is ok", Printer.OK)
            return data
        except yaml.YAMLError as e:
            self.printer.out("Syntax of template file [" + file + "] FAILED", Printer.ERROR)
            self.printer.out("YAML parsing error: " + str(e))
        except IOError as e:
            self.printer.out("File error: " + str(e), Printer.ERROR)


def _functions(relpath, names):
    path = os.path.join(sdk_loader.hammr_root(), relpath)
    with open(path, encoding="utf-8") as f:
        src = f.read()
    lines = src.split("\n")
    out = []
    for name in names:
        start = [i for i, l in enumerate(lines) if l.startswith("def %s(" % name)]
        assert len(start) == 1, "%s: no single top-level def %s" % (relpath, name)
        i = start[0]
        end = i + 1
        while end < len(lines) and (lines[end] == "" or lines[end][0] in " \t#"):
            end += 1
        out.append("\n".join(lines[i:end]))
    text = "\n\n".join(out)
    for pat, rep in _PY2:
        text = re.sub(pat, rep, text, flags=re.M)
    return compile(text, path, "exec")


def load(tmp_working_dir):
    """A namespace with hammr's functions (names above), its ``constants`` (TMP_WORKING_DIR set to
    ``tmp_working_dir``), ``printer`` and ``generics_utils``."""
    printer = Printer()
    generics_utils = GenericsUtils(printer)
    constants = types.ModuleType("hammr.utils.constants")
    cpath = os.path.join(sdk_loader.hammr_root(), "hammr", "utils", "constants.py")
    with open(cpath, encoding="utf-8") as f:
        exec(compile(f.read(), cpath, "exec"), constants.__dict__)
    constants.TMP_WORKING_DIR = str(tmp_working_dir)
    ns = {"os": os, "ntpath": ntpath, "json": json, "yaml": yaml, "printer": printer,
          "generics_utils": generics_utils, "constants": constants,
          # hammr_utils does `from uforge.objects.uforge import *`; UForgeError is the one used
          "UForgeError": sdk_loader.load().uforge.UForgeError}
    exec(_functions(os.path.join("hammr", "utils", "bundle_utils.py"), BUNDLE_UTILS), ns)
    exec(_functions(os.path.join("hammr", "utils", "hammr_utils.py"), HAMMR_UTILS), ns)
    return types.SimpleNamespace(**ns)
