"""hammr 3.8.13's template and bundle import/export commands through the real SDK, call for call
(hammr/commands/template/template.py and hammr/commands/bundle/bundle.py: do_create, import_stack,
do_export, do_import, import_bundle), with hammr's own helpers loaded from its sdist by
``hammr_code`` (archive layout: recursively_append_to_archive & co; descriptor dump:
dump_data_in_file; validation: validate / check_mandatory_stack / check_bundle). Printing and
progress bars are replaced by assertions; hammr's 2 s poll interval by POLL."""

import json
import os
import random
import shutil
import tarfile
import time

import pytest
import yaml

import hammr_code
from bundle_checks import extract, read_archive, verify_export
from satchel_harness import SatchelServer, new_artifact, new_bundle, upload_bin, uforge_error
from test_appliances import hammr_template_list
from test_export_flow import hammr_do_export

POLL = 0.2
TIMEOUT = 120


def _file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _progress(status):
    # hammr: progress.update(status.percentage) on a 0..100 ProgressBar
    if status.percentage is not None:
        assert 0 <= status.percentage <= 100, "percentage %r" % status.percentage


def _hammr_tar(h, archive_files, tar_path):
    """The tar loop shared by template and bundle do_create (w|gz, tar.add of each pair; a folder
    is added recursively, so its files can appear more than once, as hammr uploads them)."""
    tar = tarfile.open(tar_path, "w|gz")
    for file_tar_path, file_global_path in archive_files:
        if not os.path.isdir(file_global_path):
            file = h.generics_utils.get_file(
                file_global_path,
                h.constants.TMP_WORKING_DIR + os.sep + os.path.basename(file_global_path))
            assert file is not None, "hammr: Downloaded bunlde file not found"
            tar.add(file, arcname=file_tar_path)
        else:
            tar.add(file_global_path, arcname=file_tar_path)
    tar.close()


def _dump_and_tar(h, data, archive_files, is_json, names, keep):
    tmp = h.constants.TMP_WORKING_DIR
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    os.mkdir(tmp)
    file_name, new_file_name = names[1] if is_json else names[0]
    archive_files = h.dump_data_in_file(data, archive_files, is_json, file_name, new_file_name)
    tar_path = tmp + os.sep + "archive.tar.gz"
    _hammr_tar(h, archive_files, tar_path)
    shutil.copy(tar_path, keep)  # kept for the test's own checks (hammr deletes its tmp dir)
    return tar_path


# ------------------------------------------------------------------------------- template

def hammr_import_stack(api, uf, login, h, file, is_import, is_force, rbundles, is_use_major):
    """Template.import_stack. Returns (rc, final status, applianceImport or None)."""
    with open(file, "rb") as file:  # hammr: open(file, "r"), bytes on Python 2
        appImport = api.Users(login).Imports.Import(
            Imported=is_import, Force=is_force, Reusebundles=rbundles, Usemajor=is_use_major)
        assert appImport is not None and type(appImport) is uf.ApplianceImport, \
            "Imports.Import returned %r" % (appImport,)
        status = api.Users(login).Imports(appImport.dbId).Uploads.Upload(file)
    assert type(status) is uf.OpStatus, "Uploads.Upload returned %r" % (status,)
    deadline = time.time() + TIMEOUT
    while not (status.complete or status.error):
        _progress(status)
        assert time.time() < deadline, status.toxml(encoding="utf-8")
        status = api.Users(login).Imports(appImport.dbId).Status.Get()
        assert type(status) is uf.OpStatus
        time.sleep(POLL)
    if status.error:
        what = "Template import: " if is_import else "Template create: "
        # hammr concatenates both: they must be strings
        h.printer.out(what + status.message + "\n" + status.errorMessage, h.printer.ERROR)
        if is_import and status.detailedError:
            h.printer.out(status.detailedErrorMsg)
        return 2, status, None
    appImport = api.Users(login).Imports(appImport.dbId).Get()
    assert type(appImport) is uf.ApplianceImport, "Imports(id).Get returned %r" % (appImport,)
    h.printer.out("Template URI: " + appImport.referenceUri)
    h.printer.out("Template Id : " + h.generics_utils.extract_id(appImport.referenceUri))
    return 0, status, appImport


def hammr_template_create(api, uf, login, h, template_file, keep, force=False, rbundles=False,
                          use_major=False):
    """Template.do_create (no --archive-path): validate, rewrite sources to archive paths, dump
    template.yml|json, tar, import_stack(..., False, ...)."""
    file = h.generics_utils.get_file(template_file)
    template = h.validate(file)
    assert template is not None, "hammr's validate refused %s: %s" % (file, h.printer.messages)
    isJsonFile = h.check_extension_is_json(file)
    C, G = h.constants, h.generics_utils
    if "builders" in template:
        template["builders"] = None
    archive_files = []
    if "config" in template["stack"]:
        for config in template["stack"]["config"]:
            assert "source" in config, "hammr: No source file found in config"
            file_tar_path = C.FOLDER_CONFIGS + os.sep + G.remove_URI_forbidden_char(
                os.path.basename(config["source"]))
            archive_files.append([file_tar_path, config["source"]])
            config["source"] = file_tar_path
    duplicate_check_list = []
    if "bundles" in template["stack"]:
        for bundle in template["stack"]["bundles"]:
            assert "files" in bundle, "hammr: No files section found for bundle"
            for files in bundle["files"]:
                duplicate_check_list, archive_files = h.recursively_append_to_archive(
                    bundle, files, "", duplicate_check_list, archive_files)
            if "license" in bundle and "source" in bundle["license"]:
                file_tar_path = C.FOLDER_BUNDLES + os.sep + G.remove_URI_forbidden_char(
                    bundle["name"]) + os.sep + G.remove_URI_forbidden_char(
                    os.path.basename(bundle["license"]["source"]))
                archive_files.append([file_tar_path, bundle["license"]["source"]])
                bundle["license"]["source"] = file_tar_path
            if "sourceLogo" in bundle:
                file_tar_path = C.FOLDER_BUNDLES + os.sep + G.remove_URI_forbidden_char(
                    bundle["name"]) + os.sep + G.remove_URI_forbidden_char(
                    os.path.basename(bundle["sourceLogo"]))
                archive_files.append([file_tar_path, bundle["sourceLogo"]])
                bundle["sourceLogo"] = file_tar_path
    if "source_logo" in template["stack"]:
        file_tar_path = C.FOLDER_LOGO + os.sep + G.remove_URI_forbidden_char(
            os.path.basename(template["stack"]["source_logo"]))
        archive_files.append([file_tar_path, template["stack"]["source_logo"]])
        template["stack"]["source_logo"] = file_tar_path
    names = ((C.TEMPLATE_YAML_FILE_NAME, C.TEMPLATE_YAML_NEW_FILE_NAME),
             (C.TEMPLATE_JSON_FILE_NAME, C.TEMPLATE_JSON_NEW_FILE_NAME))
    tar_path = _dump_and_tar(h, template, archive_files, isJsonFile, names, keep)
    r = hammr_import_stack(api, uf, login, h, tar_path, False, force, rbundles, use_major)
    shutil.rmtree(C.TMP_WORKING_DIR)
    return r


def hammr_template_export(api, uf, login, h, aid, output_format, path):
    """Template.do_export --id aid [--outputFormat f] --file path. Returns the statuses seen."""
    myAppliance = api.Users(login).Appliances(str(aid)).Get()
    assert myAppliance is not None and type(myAppliance) is uf.Appliance, \
        "hammr would print 'No template': %r" % (myAppliance,)
    applianceExport = api.Users(login).Appliances(myAppliance.dbId).Exports().Export(
        output_format)
    assert type(applianceExport) is uf.ApplianceExport, "Export returned %r" % (applianceExport,)
    status = applianceExport.status
    assert type(status) is uf.OpStatus, "applianceExport has no embedded status"
    seen = [status]
    deadline = time.time() + TIMEOUT
    while not (status.complete or status.error):
        _progress(status)
        assert time.time() < deadline, status.toxml(encoding="utf-8")
        status = api.Users(login).Appliances(myAppliance.dbId).Exports(
            applianceExport.dbId).Status.Get()
        assert type(status) is uf.OpStatus
        seen.append(status)
        time.sleep(POLL)
    if status.error:
        pytest.fail("Export error: " + status.message + "\n" + status.errorMessage)
    with open(path, "wb") as file:
        r = api.Users(login).Appliances(myAppliance.dbId).Exports(
            applianceExport.dbId).Downloads.Download(streamingResponseFile=file)
    assert r is None, "the download was not streamed to the file: %r" % (r[:200],)
    api.Users(login).Appliances(myAppliance.dbId).Exports(applianceExport.dbId).Delete()
    # gone on the server, as hammr expects after its Delete
    with pytest.raises(Exception) as ei:
        api.Users(login).Appliances(myAppliance.dbId).Exports(applianceExport.dbId).Status.Get()
    assert uforge_error(ei, uf).statusCode == 404
    return seen


# --------------------------------------------------------------------------------- bundle

def hammr_import_bundle(api, uf, login, h, file, is_import):
    """Bundle.import_bundle. Returns (rc, final status, softwareBundleImport or None)."""
    with open(file, "rb") as file:
        bundleImport = api.Users(login).Bundleimports.Import(Imported=is_import)
        assert bundleImport is not None and type(bundleImport) is uf.SoftwareBundleImport, \
            "Bundleimports.Import returned %r" % (bundleImport,)
        status = api.Users(login).Bundleimports(bundleImport.dbId).Uploads.Upload(file)
    assert type(status) is uf.OpStatus, "Uploads.Upload returned %r" % (status,)
    deadline = time.time() + TIMEOUT
    while not (status.complete or status.error):
        _progress(status)
        assert time.time() < deadline, status.toxml(encoding="utf-8")
        status = api.Users(login).Bundleimports(bundleImport.dbId).Status.Get()
        assert type(status) is uf.OpStatus
        time.sleep(POLL)
    if status.error:
        what = "Bundle import: " if is_import else "Bundle create: "
        h.printer.out(what + status.message + "\n" + status.errorMessage, h.printer.ERROR)
        return 0, status, None  # (hammr returns 0 here too)
    bundleImport = api.Users(login).Bundleimports(bundleImport.dbId).Get()
    assert type(bundleImport) is uf.SoftwareBundleImport, \
        "Bundleimports(id).Get returned %r" % (bundleImport,)
    h.printer.out("Bundle URI: " + bundleImport.referenceUri)
    h.printer.out("Bundle Id : " + h.generics_utils.extract_id(bundleImport.referenceUri))
    return 0, status, bundleImport


def hammr_bundle_create(api, uf, login, h, bundle_file, keep):
    """Bundle.do_create (no --archive-path): validate_bundle, archive paths, bundle.yml|json,
    tar, import_bundle(..., False)."""
    file = h.generics_utils.get_file(bundle_file)
    bundle = h.validate_bundle(file)
    assert bundle is not None, "hammr's validate_bundle refused %s: %s" % (
        file, h.printer.messages)
    isJsonFile = h.check_extension_is_json(file)
    C, G = h.constants, h.generics_utils
    archive_files = []
    duplicate_check_list = []
    assert "files" in bundle, "hammr: No files section found for bundle"
    for files in bundle["files"]:
        duplicate_check_list, archive_files = h.recursively_append_to_archive(
            bundle, files, "", duplicate_check_list, archive_files)
    if "license" in bundle and "source" in bundle["license"]:
        file_tar_path = C.FOLDER_BUNDLES + os.sep + G.remove_URI_forbidden_char(
            bundle["name"]) + os.sep + G.remove_URI_forbidden_char(
            os.path.basename(bundle["license"]["source"]))
        archive_files.append([file_tar_path, bundle["license"]["source"]])
        bundle["license"]["source"] = file_tar_path
    if "sourceLogo" in bundle:
        file_tar_path = C.FOLDER_BUNDLES + os.sep + G.remove_URI_forbidden_char(
            bundle["name"]) + os.sep + G.remove_URI_forbidden_char(
            os.path.basename(bundle["sourceLogo"]))
        archive_files.append([file_tar_path, bundle["sourceLogo"]])
        bundle["sourceLogo"] = file_tar_path
    names = ((C.BUNDLE_YAML_FILE_NAME, C.BUNDLE_YAML_NEW_FILE_NAME),
             (C.BUNDLE_JSON_FILE_NAME, C.BUNDLE_JSON_NEW_FILE_NAME))
    tar_path = _dump_and_tar(h, bundle, archive_files, isJsonFile, names, keep)
    r = hammr_import_bundle(api, uf, login, h, tar_path, False)
    shutil.rmtree(C.TMP_WORKING_DIR)
    return r


# -------------------------------------------------------------------------------- fixtures

def _ref_id(ref, kind):
    parts = ref.split("/")
    assert len(parts) == 4 and parts[0] == "users" and parts[2] == kind, ref
    return int(parts[3])


@pytest.fixture
def h(tmp_path):
    return hammr_code.load(tmp_path / "hammr-tmp")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The files a user's template.yml points at (absolute paths), and their contents."""
    d = tmp_path_factory.mktemp("template-src")
    rnd = random.Random(3813)
    files = {
        "tools/run.sh": b"#!/bin/sh\necho run\n",
        "tools/conf/app.conf": b"[app]\nkey = value\n",
        "tools/conf/extra.cfg": b"extra=2\n",
        "tools/data.bin": bytes(rnd.getrandbits(8) for _ in range(200_000)),
        "tools/LICENSE.txt": b"Apache License 2.0\n",
        "other/empty": b"",
        "boot/first boot.sh": b"#!/bin/sh\necho boot\n",
    }
    for rel, data in files.items():
        _file(str(d / rel), data)
    return d, files


TEMPLATE_NAME, TEMPLATE_VERSION = "sdk web", "2.0"


def _template_yml(src):
    """A template.yml as a hammr user writes one: local sources; a folder listed with one of
    its two files (hammr adds the other itself)."""
    return {
        "stack": {
            "name": TEMPLATE_NAME,
            "version": TEMPLATE_VERSION,
            "description": "created by hammr's template create",
            "os": {"name": "CentOS", "version": "7", "arch": "x86_64", "profile": "Minimal",
                   "pkgs": [{"name": "iotop"}, {"name": "curl", "version": "7.29"}]},
            "bundles": [
                {"name": "sdk tools", "version": "1.0", "description": "tools",
                 "license": {"source": str(src / "tools/LICENSE.txt")},
                 "files": [
                     {"name": "run.sh", "source": str(src / "tools/run.sh")},
                     {"name": "conf", "source": str(src / "tools/conf"),
                      "files": [{"name": "app.conf", "source": str(src / "tools/conf/app.conf")}]},
                     {"name": "data.bin", "source": str(src / "tools/data.bin")},
                 ]},
                {"name": "other", "version": "3",
                 "files": [{"name": "empty", "source": str(src / "other/empty")}]},
            ],
            "config": [{"name": "first boot.sh", "source": str(src / "boot/first boot.sh"),
                        "order": 5, "type": "everyboot"}],
        }
    }


# Expected archive paths of an export (hammr's layout: bundles/<name>/<version>/..., license beside
# the version folder, boot scripts under config/) -> source file.
EXPECTED = {
    "bundles/sdk tools/1.0/run.sh": "tools/run.sh",
    "bundles/sdk tools/1.0/conf/app.conf": "tools/conf/app.conf",
    "bundles/sdk tools/1.0/conf/extra.cfg": "tools/conf/extra.cfg",
    "bundles/sdk tools/1.0/data.bin": "tools/data.bin",
    "bundles/sdk tools/LICENSE.txt": "tools/LICENSE.txt",
    "bundles/other/3/empty": "other/empty",
}


@pytest.fixture(scope="module")
def created(server, alice, uf, sources, tmp_path_factory):
    """`hammr template create --file template.yml` by alice."""
    src, files = sources
    work = tmp_path_factory.mktemp("template-create")
    tpl = str(work / "template.yml")
    with open(tpl, "w") as f:
        yaml.safe_dump(_template_yml(src), f, default_flow_style=False)
    h = hammr_code.load(work / "hammr-tmp")
    keep = str(work / "uploaded.tar.gz")
    rc, status, imp = hammr_template_create(alice, uf, "alice", h, tpl, keep)
    assert rc == 0, "template create failed: %s" % h.printer.messages
    return {"aid": _ref_id(imp.referenceUri, "appliances"), "import": imp, "status": status,
            "uploaded": keep, "printed": h.printer.messages}


def _check_template_archive(path, fmt, sources, workdir, h):
    """An exported template archive: hammr's layout, the uploaded bytes, and hammr's own
    validation of the extracted template.yml|json."""
    src, files = sources
    members = read_archive(path)
    doc = "template.yml" if fmt == "yaml" else "template.json"
    assert doc in members, sorted(members)
    for arc, rel in EXPECTED.items():
        assert members.get(arc) == files[rel], "%s differs from %s (or is missing; members %s)" % (
            arc, rel, sorted(members))
    boot = [m for m in members if m.startswith("config/")]
    assert len(boot) == 1 and members[boot[0]] == files["boot/first boot.sh"], boot
    dest = os.path.join(workdir, "extracted-%s" % fmt)
    os.makedirs(dest)
    extract(path, dest)
    cwd = os.getcwd()
    os.chdir(dest)  # sources are relative to the archive root; check_files tests isdir(source)
    try:
        template = h.validate(doc)
    finally:
        os.chdir(cwd)
    assert template is not None and h.printer.errors() == [], \
        "hammr's validate refused the exported %s: %s" % (doc, h.printer.messages)
    stack = template["stack"]
    assert (stack["name"], stack["version"]) == (TEMPLATE_NAME, TEMPLATE_VERSION)
    assert (stack["os"]["name"], str(stack["os"]["version"]), stack["os"]["arch"]) == \
           ("CentOS", "7", "x86_64")
    assert stack["os"]["profile"] == "Minimal"
    # a package is exported as its bare name when it has no version (the import reads both)
    pkgs = dict((p, None) if isinstance(p, str) else (p["name"], p.get("version"))
                for p in stack["os"]["pkgs"])
    assert pkgs == {"iotop": None, "curl": "7.29"}, stack["os"]["pkgs"]
    assert [(b["name"], b["version"]) for b in stack["bundles"]] == \
           [("sdk tools", "1.0"), ("other", "3")]
    assert stack["bundles"][0]["license"]["source"] == "bundles/sdk tools/LICENSE.txt"
    (cfg,) = stack["config"]
    assert cfg["name"] == "first boot.sh" and cfg["source"] == boot[0]
    assert cfg["order"] == 5 and cfg["type"] == "everyboot"
    return template


# ----------------------------------------------------------------------------------- tests

def test_template_create(server, alice, uf, created, sources):
    """1+2: template create (the archive hammr builds, import_stack) and template list."""
    src, files = sources
    imp, status = created["import"], created["status"]
    assert status.complete and not status.error
    assert not imp.imported
    assert ("Template Id : %d" % created["aid"]) in [m for _, m in created["printed"]]
    # what hammr uploaded: its own layout (spaces -> '_', version folder, repeated folder members)
    with tarfile.open(created["uploaded"], "r:gz") as t:
        names = t.getnames()
    assert names[-1] == "template.yml"
    assert "config/first_boot.sh" in names and "bundles/sdk_tools/LICENSE.txt" in names
    assert names.count("bundles/sdk_tools/1.0/conf/app.conf") == 2, names
    assert names.count("bundles/sdk_tools/1.0/conf/extra.cfg") == 2, names

    rows = {r[0]: r for r in hammr_template_list(alice, uf, "alice")}
    row = rows[created["aid"]]
    assert row[1:4] == [TEMPLATE_NAME, TEMPLATE_VERSION, "CentOS 7 x86_64"], row
    assert row[8] == "", "a created template is not marked imported: %r" % (row,)
    held = alice.Users("alice").Appliances(created["aid"]).Mysoftware.Getall()
    assert type(held) is uf.MySoftwareList
    assert [(m.name, m.version) for m in held.mySoftwareList.mySoftware] == \
           [("sdk tools", "1.0"), ("other", "3")]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_template_export_and_validate(server, alice, uf, created, sources, tmp_path, h, fmt):
    """3+4: template export (yaml, json): archive, files byte for byte, hammr's validate."""
    path = str(tmp_path / "archive.tar.gz")
    seen = hammr_template_export(alice, uf, "alice", h, created["aid"], fmt, path)
    assert seen[-1].complete and not seen[-1].error
    _check_template_archive(path, fmt, sources, str(tmp_path), h)


def test_template_import_force_and_reuse(server, alice, bob, uf, created, sources, tmp_path):
    """5: template import of alice's export by bob; again without -f (refused, the message hammr
    prints), with -f (replaced), with -f -r (bundles reused)."""
    archive = str(tmp_path / "alice-export.tar.gz")
    h = hammr_code.load(tmp_path / "hammr-tmp")
    hammr_template_export(alice, uf, "alice", h, created["aid"], "yaml", archive)

    def bobs_bundles():
        lst = bob.Users("bob").Mysoftware().Getall()
        return sorted(m.dbId for m in (lst.mySoftwareList.mySoftware or []))

    def held(aid):
        lst = bob.Users("bob").Appliances(aid).Mysoftware.Getall()
        return [m.dbId for m in lst.mySoftwareList.mySoftware]

    before = bobs_bundles()
    h = hammr_code.load(tmp_path / "hammr-tmp")
    rc, status, imp = hammr_import_stack(bob, uf, "bob", h, archive, True, False, False, False)
    assert rc == 0 and status.complete, h.printer.messages
    first = _ref_id(imp.referenceUri, "appliances")
    assert imp.imported
    rows = {r[0]: r for r in hammr_template_list(bob, uf, "bob")}
    assert rows[first][1:3] == [TEMPLATE_NAME, TEMPLATE_VERSION]
    first_bundles = held(first)
    assert len(first_bundles) == 2 and len(bobs_bundles()) == len(before) + 2
    # bob's copy exports to the same files
    again = str(tmp_path / "bob-export.tar.gz")
    hammr_template_export(bob, uf, "bob", h, first, "yaml", again)
    _check_template_archive(again, "yaml", sources, str(tmp_path), h)

    # again, without --force: the import ends in error, and hammr prints why
    h = hammr_code.load(tmp_path / "hammr-tmp")
    rc, status, imp = hammr_import_stack(bob, uf, "bob", h, archive, True, False, False, False)
    assert rc == 2 and status.error and imp is None
    (msg,) = h.printer.errors()
    assert msg.startswith("Template import: ") and "force" in msg, msg
    assert bob.Users("bob").Appliances(first).Get().dbId == first

    # -f: the appliance is replaced
    h = hammr_code.load(tmp_path / "hammr-tmp")
    rc, status, imp = hammr_import_stack(bob, uf, "bob", h, archive, True, True, False, False)
    assert rc == 0 and status.complete, h.printer.messages
    second = _ref_id(imp.referenceUri, "appliances")
    assert second != first
    with pytest.raises(Exception) as ei:
        bob.Users("bob").Appliances(first).Get()
    assert uforge_error(ei, uf).statusCode == 404
    mine = [r for r in hammr_template_list(bob, uf, "bob") if r[1] == TEMPLATE_NAME]
    assert [r[0] for r in mine] == [second]
    second_bundles = held(second)
    assert not set(second_bundles) & set(first_bundles), "without -r the bundles are new"

    # -f -r: replaced again, with the bundles bob already has (no new ones)
    count = len(bobs_bundles())
    h = hammr_code.load(tmp_path / "hammr-tmp")
    rc, status, imp = hammr_import_stack(bob, uf, "bob", h, archive, True, True, True, False)
    assert rc == 0 and status.complete, h.printer.messages
    third = _ref_id(imp.referenceUri, "appliances")
    assert third not in (first, second)
    assert len(bobs_bundles()) == count, "with -r (reuseBundles) no bundle is imported again"
    assert set(held(third)) <= set(bobs_bundles()) and len(held(third)) == 2
    assert set(held(third)) <= set(first_bundles) | set(second_bundles)
    # the import's record says what hammr asked for
    rec = bob.Users("bob").Imports(imp.dbId).Get()
    assert rec.reuseBundles and rec.force_rw and rec.imported and not rec.useMajor


def test_imported_template_is_marked_in_hammr_list(server, alice, bob, uf, created, tmp_path):
    archive = str(tmp_path / "alice-export.tar.gz")
    h = hammr_code.load(tmp_path / "hammr-tmp")
    hammr_template_export(alice, uf, "alice", h, created["aid"], "yaml", archive)
    rc, status, imp = hammr_import_stack(bob, uf, "bob", h, archive, True, True, True, False)
    assert rc == 0 and imp.imported, h.printer.messages
    aid = _ref_id(imp.referenceUri, "appliances")
    row = {r[0]: r for r in hammr_template_list(bob, uf, "bob")}[aid]
    assert row[8] == "X", row


def test_bundle_create_with_a_nested_folder(server, alice, uf, tmp_path):
    """hammr 3.8.13 archives a folder inside a folder twice: tar.add(folder) recursively (member
    conf/sub/b.cfg) and, from process_files_from_folder, under a path missing a '/' (conf + sub ->
    confsub/b.cfg, the one its descriptor names). The unnamed member is skipped; the bundle holds
    every file with its content."""
    src = tmp_path / "src"
    _file(str(src / "conf" / "a.cfg"), b"a=1\n")
    _file(str(src / "conf" / "sub" / "b.cfg"), b"b=2\n")
    path = str(tmp_path / "bundle.yml")
    with open(path, "w") as f:
        yaml.safe_dump({"name": "sdk-nested", "version": "1",
                        "files": [{"name": "conf", "source": str(src / "conf"), "files": []}]}, f)
    h = hammr_code.load(tmp_path / "hammr-tmp")
    rc, status, imp = hammr_bundle_create(alice, uf, "alice", h, path,
                                          str(tmp_path / "up.tar.gz"))
    assert status.complete and not status.error, h.printer.messages
    msid = _ref_id(imp.referenceUri, "mysoftware")
    out = str(tmp_path / "nested-export.tar.gz")
    hammr_do_export(alice, uf, "alice", msid, "yaml", out)
    contents = [v for v in read_archive(out).values() if v is not None]
    assert b"a=1\n" in contents and b"b=2\n" in contents


def test_bundle_import_of_an_export(server, alice, bob, uf, tmp_path):
    """6a: `hammr bundle import --file` of an archive made by hammr's bundle export."""
    ms = new_bundle(alice, uf, "alice", "sdk-imported", "4.1", "to be imported")
    files = {"README.txt": b"read me\n", "bin/tool": b"\x7fELF" + bytes(range(256)) * 40}
    readme = new_artifact(alice, uf, "alice", ms.dbId, "README.txt")
    upload_bin(alice, "alice", ms.dbId, readme.dbId, "README.txt", files["README.txt"])
    folder = new_artifact(alice, uf, "alice", ms.dbId, "bin", kind="folder")
    tool = new_artifact(alice, uf, "alice", ms.dbId, "tool", parent=folder.dbId)
    upload_bin(alice, "alice", ms.dbId, tool.dbId, "tool", files["bin/tool"])
    exported = str(tmp_path / "bundle-export.tar.gz")
    hammr_do_export(alice, uf, "alice", ms.dbId, "yaml", exported)

    h = hammr_code.load(tmp_path / "hammr-tmp")
    rc, status, imp = hammr_import_bundle(bob, uf, "bob", h, exported, True)
    assert rc == 0 and status.complete and not status.error, h.printer.messages
    assert imp.imported
    msid = _ref_id(imp.referenceUri, "mysoftware")
    got = bob.Users("bob").Mysoftware(msid).Get()
    assert type(got) is uf.MySoftware
    assert (got.name, got.version, got.description) == ("sdk-imported", "4.1", "to be imported")
    back = str(tmp_path / "bob.tar.gz")
    hammr_do_export(bob, uf, "bob", msid, "yaml", back)
    verify_export(back, str(tmp_path), {"name": "sdk-imported", "version": "4.1",
                                        "files": files, "folders": ["bin"], "license": None,
                                        "logo": None}, "yaml")
    assert read_archive(back) == read_archive(exported)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_bundle_create(server, alice, uf, tmp_path, fmt):
    """6b: `hammr bundle create --file bundle.yml|json`: hammr's archive, import_bundle with
    Imported=False; the bundle's files are those uploaded."""
    src = tmp_path / "src"
    files = {"run.sh": b"#!/bin/sh\necho create\n", "conf/a.cfg": b"a=1\n",
             "conf/b.cfg": b"b=2\n", "big.bin": os.urandom(1 << 20)}
    for rel, data in files.items():
        _file(str(src / rel), data)
    lic = _file(str(src / "COPYING"), b"GPLv3\n")
    logo = _file(str(src / "logo.png"), b"\x89PNG\r\n\x1a\nfake")
    name = "sdk-created-" + fmt
    doc = {"name": name, "version": "0.9", "description": "made by bundle create",
           "license": {"source": lic}, "sourceLogo": logo,
           "files": [{"name": "run.sh", "source": str(src / "run.sh")},
                     {"name": "conf", "source": str(src / "conf"), "files": []},
                     {"name": "big.bin", "source": str(src / "big.bin")}]}
    path = str(tmp_path / ("bundle." + ("yml" if fmt == "yaml" else "json")))
    with open(path, "w") as f:
        if fmt == "yaml":
            yaml.safe_dump(doc, f)
        else:
            json.dump(doc, f)
    h = hammr_code.load(tmp_path / "hammr-tmp")
    keep = str(tmp_path / "uploaded.tar.gz")
    rc, status, imp = hammr_bundle_create(alice, uf, "alice", h, path, keep)
    assert rc == 0 and status.complete and not status.error, h.printer.messages
    assert not imp.imported
    msid = _ref_id(imp.referenceUri, "mysoftware")
    got = alice.Users("alice").Mysoftware(msid).Get()
    assert (got.name, got.version, got.description) == (name, "0.9", "made by bundle create")
    out = str(tmp_path / "created-export.tar.gz")
    hammr_do_export(alice, uf, "alice", msid, fmt, out)
    verify_export(out, str(tmp_path), {
        "name": name, "version": "0.9", "files": files, "folders": ["conf"],
        "license": ("COPYING", b"GPLv3\n"), "logo": ("logo.png", b"\x89PNG\r\n\x1a\nfake")},
        fmt)


# ------------------------------------------------------------------------------------ cancel

@pytest.fixture(scope="module")
def slow_server(tmp_path_factory, sdk):
    """A second server whose export workers pause after every chunk they copy (hidden testing aid
    --export-throttle, through its environment variable), so an export is observably running."""
    s = SatchelServer(tmp_path_factory.mktemp("satchel-slow-tpl"),
                      extra_env={"SATCHEL_EXPORT_THROTTLE": "300ms"}).start()
    yield s
    s.stop()


def test_cancel_a_running_template_export(slow_server, uf):
    """7: Appliances(aid).Exports(eid).Status.Cancel() on a running export: the reply and the
    status say cancelled; the archive cannot be downloaded."""
    api = slow_server.api("alice")
    ms = new_bundle(api, uf, "alice", "slow", "1")
    a = new_artifact(api, uf, "alice", ms.dbId, "big.bin")
    upload_bin(api, "alice", ms.dbId, a.dbId, "big.bin", os.urandom(16 << 20))
    body = uf.appliance()
    body.name, body.version = "slow template", "1"
    body.distributionName, body.archName = "CentOS 7", "x86_64"
    body.mySoftwareUris = uf.UriList()
    body.mySoftwareUris.uri.append("users/alice/mysoftware/%d" % ms.dbId)
    app = api.Users("alice").Appliances().Create(body=body)
    assert type(app) is uf.Appliance
    ex = api.Users("alice").Appliances(app.dbId).Exports().Export("yaml")
    assert type(ex) is uf.ApplianceExport
    deadline = time.time() + 60
    while True:
        st = api.Users("alice").Appliances(app.dbId).Exports(ex.dbId).Status.Get()
        assert not (st.complete or st.error), "the export ended before it was seen running"
        if (st.bytesLoaded or 0) > 0:
            break
        assert time.time() < deadline, st.toxml(encoding="utf-8")
        time.sleep(0.05)
    # someone else cannot cancel it
    with pytest.raises(Exception) as ei:
        slow_server.api("bob").Users("alice").Appliances(app.dbId).Exports(ex.dbId).Status.Cancel()
    assert uforge_error(ei, uf).statusCode == 404
    r = api.Users("alice").Appliances(app.dbId).Exports(ex.dbId).Status.Cancel()
    assert type(r) is uf.OpStatus, "Status.Cancel returned %r" % (r,)
    assert r.cancelled and not r.complete, r.toxml(encoding="utf-8")
    st = api.Users("alice").Appliances(app.dbId).Exports(ex.dbId).Status.Get()
    # hammr's do_export polls until complete or error and never looks at cancelled: a cancel made
    # by another client or the page also reads as an error, so hammr stops and prints the message.
    assert type(st) is uf.OpStatus and st.cancelled and not st.complete and st.error
    assert "cancel" in st.errorMessage, st.toxml(encoding="utf-8")
    with pytest.raises(Exception) as ei:
        api.Users("alice").Appliances(app.dbId).Exports(ex.dbId).Downloads.Download()
    assert uforge_error(ei, uf).statusCode == 409
    # again: nothing to cancel, still cancelled
    r = api.Users("alice").Appliances(app.dbId).Exports(ex.dbId).Status.Cancel()
    assert type(r) is uf.OpStatus and r.cancelled
    api.Users("alice").Appliances(app.dbId).Exports(ex.dbId).Delete()
