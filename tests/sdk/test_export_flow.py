"""hammr's `bundle export` flow through the real SDK, then the archive checked against the
uploads, manifest.json and hammr's own bundle validation."""

import io
import os
import random
import time

import pytest

from bundle_checks import verify_export
from satchel_harness import new_artifact, new_bundle, upload_bin, uforge_error

BIG = 3 * 1024 * 1024 + 12345  # a few MiB, not a multiple of any block size


def hammr_do_export(api, uf, login, bundle_id, output_format, path, poll=0.2, timeout=180):
    """hammr 3.8.13 hammr/commands/bundle/bundle.py do_export, step by step (progress bar and
    printing replaced by assertions). Returns (mySoftware, export, statuses polled)."""
    mySoftware = api.Users(login).Mysoftware(bundle_id).Get()
    assert mySoftware is not None and type(mySoftware) is uf.MySoftware, \
        "hammr would print 'No bundle': got %r" % (mySoftware,)
    mySoftwareExport = api.Users(login).Mysoftware(mySoftware.dbId).Exports().Export(output_format)
    assert type(mySoftwareExport) is uf.SoftwareBundleExport, \
        "Export returned %r" % (mySoftwareExport,)
    assert mySoftwareExport.dbId is not None
    status = mySoftwareExport.status
    assert type(status) is uf.OpStatus, "softwareBundleExport has no embedded status"
    seen = [status]
    deadline = time.time() + timeout
    while not (status.complete or status.error):
        # hammr: progress.update(status.percentage) on a 0..100 ProgressBar (raises if out
        # of range)
        if status.percentage is not None:
            assert 0 <= status.percentage <= 100, "percentage %r" % status.percentage
        assert time.time() < deadline, "export still running after %ss: %s" % (
            timeout, status.toxml(encoding="utf-8"))
        status = api.Users(login).Mysoftware(mySoftware.dbId).Exports(
            mySoftwareExport.dbId).Status.Get()
        assert type(status) is uf.OpStatus, "Status.Get returned %r" % (status,)
        seen.append(status)
        time.sleep(poll)
    if status.error:
        # hammr: printer.out("Export error: "+status.message+"\n"+status.errorMessage)
        pytest.fail("Export error: %s\n%s" % (status.message, status.errorMessage))
    with open(path, "wb") as file:
        r = api.Users(login).Mysoftware(mySoftware.dbId).Exports(
            mySoftwareExport.dbId).Downloads.Download(streamingResponseFile=file)
    assert r is None, ("the SDK did not stream the download to the file (it does so only when "
                       "the reply is not Content-Type application/xml); got %r" % (r[:200],))
    # Delete export archive on the server
    api.Users(login).Mysoftware(mySoftware.dbId).Exports(mySoftwareExport.dbId).Delete()
    return mySoftware, mySoftwareExport, seen


@pytest.fixture(scope="module")
def demo(server, alice, uf, tmp_path_factory):
    """A bundle of alice's: three top-level files, a folder with a file, a few-MiB random
    binary, a license and a logo."""
    rnd = random.Random(20190605)
    name, version = "satchel-sdk-demo", "1.2.0"
    ms = new_bundle(alice, uf, "alice", name, version, "exported through the UForge SDK")
    msid = ms.dbId
    files = {
        "README.txt": b"Satchel SDK test bundle\nline 2\n",
        "payload.bin": rnd.getrandbits(8 * BIG).to_bytes(BIG, "little"),
        "install.sh": b"#!/bin/sh\necho installing\n" * 100,
        "conf/app.conf": b"[app]\nkey = value\n",
    }
    top = {}
    for fname in ("README.txt", "payload.bin", "install.sh"):
        a = new_artifact(alice, uf, "alice", msid, fname)
        if fname == "payload.bin":
            # from a real file on disk, opened the way hammr hands files to the SDK
            disk = tmp_path_factory.mktemp("uploads") / fname
            disk.write_bytes(files[fname])
            with open(str(disk), "rb") as fh:
                up = alice.Users("alice").Mysoftware(msid).Artifacts(a.dbId).Bin(fname).Upload(
                    body=fh)
        else:
            up = upload_bin(alice, "alice", msid, a.dbId, fname, files[fname])
        assert type(up) is uf.SoftwareArtifact, "bin upload returned %r" % (up,)
        if up.size is not None:
            assert up.size == len(files[fname])
        top[fname] = a.dbId
    folder = new_artifact(alice, uf, "alice", msid, "conf", kind="folder")
    child = new_artifact(alice, uf, "alice", msid, "app.conf", parent=folder.dbId)
    up = upload_bin(alice, "alice", msid, child.dbId, "app.conf", files["conf/app.conf"])
    assert type(up) is uf.SoftwareArtifact
    license_data = b"Apache License\nVersion 2.0, January 2004\n"
    lic = alice.Users("alice").Mysoftware(msid).Licenses(0, "LICENSE.txt").Uploadfile(
        body=io.BytesIO(license_data))
    assert type(lic) is uf.License, "license upload returned %r" % (lic,)
    logo_data = b"\x89PNG\r\n\x1a\n" + bytes(rnd.getrandbits(8) for _ in range(2000))
    logo = alice.Users("alice").Mysoftware(msid).Logo(0, "logo.png").Upload(
        body=io.BytesIO(logo_data))
    assert type(logo) is uf.Logo, "logo upload returned %r" % (logo,)
    return {
        "msid": msid,
        "name": name,
        "version": version,
        "description": "exported through the UForge SDK",
        "files": files,
        "folders": ["conf"],
        "license": ("LICENSE.txt", license_data),
        "logo": ("logo.png", logo_data),
    }


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_hammr_export_flow(server, alice, uf, demo, tmp_path, fmt):
    path = str(tmp_path / ("%s.tar.gz" % demo["name"]))
    ms, export, seen = hammr_do_export(alice, uf, "alice", demo["msid"], fmt, path)
    assert ms.name == demo["name"] and ms.version == demo["version"]
    assert export.status is not None
    final = seen[-1]
    assert final.complete and not final.error
    assert final.percentage in (None, 100), "complete export at %r%%" % final.percentage
    if final.bytesTotal is not None and final.bytesLoaded is not None:
        assert final.bytesLoaded == final.bytesTotal
    assert os.path.getsize(path) > 0
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b", "download is not gzip"
    verify_export(path, str(tmp_path), demo, fmt)

    # hammr deleted the export: it is gone for the SDK too
    with pytest.raises(Exception) as ei:
        alice.Users("alice").Mysoftware(demo["msid"]).Exports(export.dbId).Status.Get()
    assert uforge_error(ei, uf).statusCode == 404


def test_export_with_empty_file(server, alice, uf, tmp_path):
    """A bundle whose only file is empty exports too (a 0-byte member)."""
    ms = new_bundle(alice, uf, "alice", "empty-file-bundle", "0.1")
    a = new_artifact(alice, uf, "alice", ms.dbId, "empty.txt")
    upload_bin(alice, "alice", ms.dbId, a.dbId, "empty.txt", b"")
    path = str(tmp_path / "b.tar.gz")
    hammr_do_export(alice, uf, "alice", ms.dbId, "yaml", path)
    verify_export(path, str(tmp_path), {
        "name": "empty-file-bundle", "version": "0.1", "files": {"empty.txt": b""},
        "folders": [], "license": None, "logo": None}, "yaml")
