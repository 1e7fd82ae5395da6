"""Every implemented route through the real SDK: returned binding type and key fields."""

import hashlib
import io
import time

import pytest

from satchel_harness import new_artifact, new_bundle, upload_bin, uforge_error


def _ids(artifact_list):
    """dbIds of a SoftwareArtifacts listing, nested sub-artifacts included."""
    out = []

    def walk(items):
        for a in items:
            out.append(a.dbId)
            if a.subSoftwareArtifacts is not None:
                walk(a.subSoftwareArtifacts.softwareArtifact)

    walk(artifact_list)
    return out


def wait_export(api, login, msid, eid, timeout=120):
    deadline = time.time() + timeout
    while True:
        st = api.Users(login).Mysoftware(msid).Exports(eid).Status.Get()
        if st.complete or st.error:
            return st
        assert time.time() < deadline, "export %s did not finish" % eid
        time.sleep(0.1)


def test_status(server, alice, uf):
    st = alice.Status.Get()
    assert type(st) is uf.ServiceStatus
    assert st.version == "3.8.13"
    assert st.alive in (None, True)


def test_status_is_sdk_compatible(server, alice, sdk):
    # the SDK's own compatibility check (reads config/config.cfg of the sdist)
    compatible, version = sdk.application.checkUForgeCompatible(alice)
    assert compatible and version == "3.8.13"


def test_get_user(server, alice, root, uf):
    u = alice.Users("alice").Get()
    assert type(u) is uf.User
    assert u.loginName == "alice"
    assert u.admin in (None, False)
    # an administrator may read another user
    u2 = root.Users("alice").Get()
    assert type(u2) is uf.User and u2.loginName == "alice"
    assert root.Users("root").Get().admin == True


def test_mysoftware_crud(server, alice, uf):
    ms = new_bundle(alice, uf, "alice", "crud-bundle", "2.0", "first description")
    assert ms.name == "crud-bundle" and ms.version == "2.0"
    assert ms.description == "first description"
    assert ms.dbId is not None

    got = alice.Users("alice").Mysoftware(ms.dbId).Get()
    assert type(got) is uf.MySoftware
    assert (got.dbId, got.name, got.version, got.description) == \
        (ms.dbId, "crud-bundle", "2.0", "first description")

    lst = alice.Users("alice").Mysoftware().Getall()
    assert type(lst) is uf.MySoftwareList
    assert lst.mySoftwareList is not None
    by_id = {m.dbId: m for m in lst.mySoftwareList.mySoftware}
    assert ms.dbId in by_id and by_id[ms.dbId].name == "crud-bundle"
    if lst.total is not None:
        assert lst.total == len(lst.mySoftwareList.mySoftware)

    body = uf.mySoftware()
    body.name = "crud-bundle"
    body.version = "2.0"
    body.description = "second description"
    upd = alice.Users("alice").Mysoftware(ms.dbId).Update(body=body)
    assert type(upd) is uf.MySoftware
    assert upd.dbId == ms.dbId and upd.description == "second description"
    assert alice.Users("alice").Mysoftware(ms.dbId).Get().description == "second description"

    clone_body = uf.mySoftware()
    clone_body.name = "crud-bundle-clone"
    clone_body.version = "2.1"
    clone = alice.Users("alice").Mysoftware(ms.dbId).Clone.Clone(body=clone_body)
    assert type(clone) is uf.MySoftware  # what hammr's do_clone checks
    assert clone.dbId != ms.dbId
    assert (clone.name, clone.version) == ("crud-bundle-clone", "2.1")
    assert alice.Users("alice").Mysoftware(clone.dbId).Get().name == "crud-bundle-clone"

    r = alice.Users("alice").Mysoftware(clone.dbId).Delete()
    assert r in (b"", None)
    with pytest.raises(Exception) as ei:
        alice.Users("alice").Mysoftware(clone.dbId).Get()
    assert uforge_error(ei, uf).statusCode == 404
    ids = [m.dbId for m in alice.Users("alice").Mysoftware().Getall().mySoftwareList.mySoftware]
    assert clone.dbId not in ids and ms.dbId in ids


def test_artifacts(server, alice, uf):
    ms = new_bundle(alice, uf, "alice", "artifact-bundle", "1")
    msid = ms.dbId
    a = new_artifact(alice, uf, "alice", msid, "tool.bin")
    assert a.name == "tool.bin" and a.dbId is not None
    assert a.type in (None, "file")

    data = bytes(range(256)) * 4097
    up = upload_bin(alice, "alice", msid, a.dbId, "tool.bin", data)
    assert type(up) is uf.SoftwareArtifact
    assert up.dbId == a.dbId
    if up.size is not None:
        assert up.size == len(data)
    if up.sha256sum is not None:
        assert up.sha256sum == hashlib.sha256(data).hexdigest()
    if up.md5sum is not None:
        assert up.md5sum == hashlib.md5(data).hexdigest()

    got = alice.Users("alice").Mysoftware(msid).Artifacts(a.dbId).Get()
    assert type(got) is uf.SoftwareArtifact
    assert got.dbId == a.dbId and got.name == "tool.bin"
    if got.size is not None:
        assert got.size == len(data)

    # GET .../bin/{fileName}: raw bytes (not application/xml, so the SDK returns the body)
    raw = alice.Users("alice").Mysoftware(msid).Artifacts(a.dbId).Bin("tool.bin").Downloadfile()
    assert raw == data
    # ... and streamed to a file the way the SDK streams downloads
    buf = io.BytesIO()
    r = alice.Users("alice").Mysoftware(msid).Artifacts(a.dbId).Bin("tool.bin").Downloadfile(
        streamingResponseFile=buf)
    assert r is None and buf.getvalue() == data
    # GET .../bin (no file name)
    assert alice.Users("alice").Mysoftware(msid).Artifacts(a.dbId).Bin.Download() == data

    folder = new_artifact(alice, uf, "alice", msid, "etc", kind="folder")
    assert folder.type in (None, "folder")
    child = new_artifact(alice, uf, "alice", msid, "x.conf", parent=folder.dbId)
    assert child.name == "x.conf" and child.dbId not in (a.dbId, folder.dbId)
    upload_bin(alice, "alice", msid, child.dbId, "x.conf", b"x=1\n")

    lst = alice.Users("alice").Mysoftware(msid).Artifacts().Getall()
    assert type(lst) is uf.SoftwareArtifacts
    assert lst.softwareArtifacts is not None
    ids = _ids(lst.softwareArtifacts.softwareArtifact)
    for said in (a.dbId, folder.dbId, child.dbId):
        assert said in ids, "artifact %s missing from the listing %s" % (said, ids)

    body = uf.softwareArtifact()
    body.name = "tool-renamed.bin"
    body.type = "file"
    upd = alice.Users("alice").Mysoftware(msid).Artifacts(a.dbId).Update(body=body)
    assert type(upd) is uf.SoftwareArtifact
    assert upd.dbId == a.dbId and upd.name == "tool-renamed.bin"
    assert alice.Users("alice").Mysoftware(msid).Artifacts(a.dbId).Get().name == \
        "tool-renamed.bin"

    r = alice.Users("alice").Mysoftware(msid).Artifacts(a.dbId).Delete()
    assert r in (b"", None)
    with pytest.raises(Exception) as ei:
        alice.Users("alice").Mysoftware(msid).Artifacts(a.dbId).Get()
    assert uforge_error(ei, uf).statusCode == 404
    ids = _ids(alice.Users("alice").Mysoftware(msid).Artifacts().Getall()
               .softwareArtifacts.softwareArtifact)
    assert a.dbId not in ids and folder.dbId in ids


def test_license_and_logo(server, alice, uf):
    ms = new_bundle(alice, uf, "alice", "attach-bundle", "1")
    msid = ms.dbId
    lic_data = b"MIT License\n\nCopyright (c) 2019\n"
    lic = alice.Users("alice").Mysoftware(msid).Licenses(0, "COPYING").Uploadfile(
        body=io.BytesIO(lic_data))
    assert type(lic) is uf.License
    assert lic.dbId is not None
    assert lic.name in (None, "COPYING")
    if lic.size is not None:
        assert lic.size == len(lic_data)

    got = alice.Users("alice").Mysoftware(msid).Licenses(lic.dbId).Download()
    assert got == lic_data

    logo_data = b"GIF89a" + bytes(range(200))
    logo = alice.Users("alice").Mysoftware(msid).Logo(0, "logo.gif").Upload(
        body=io.BytesIO(logo_data))
    assert type(logo) is uf.Logo
    assert logo.dbId is not None
    assert logo.name in (None, "logo.gif")
    assert alice.Users("alice").Mysoftware(msid).Logo(logo.dbId).Download() == logo_data
    assert alice.Users("alice").Mysoftware(msid).Logo(logo.dbId, "logo.gif").Downloadfile() \
        == logo_data

    # the bundle shows them
    b = alice.Users("alice").Mysoftware(msid).Get()
    if b.license is not None:
        assert type(b.license) is uf.License and b.license.dbId == lic.dbId
    if b.logo is not None:
        assert type(b.logo) is uf.Logo and b.logo.dbId == logo.dbId

    assert alice.Users("alice").Mysoftware(msid).Licenses(lic.dbId).Delete() in (b"", None)
    with pytest.raises(Exception) as ei:
        alice.Users("alice").Mysoftware(msid).Licenses(lic.dbId).Download()
    assert uforge_error(ei, uf).statusCode == 404
    assert alice.Users("alice").Mysoftware(msid).Logo(logo.dbId).Delete() in (b"", None)
    with pytest.raises(Exception) as ei:
        alice.Users("alice").Mysoftware(msid).Logo(logo.dbId).Download()
    assert uforge_error(ei, uf).statusCode == 404
    b = alice.Users("alice").Mysoftware(msid).Get()
    assert b.license is None and b.logo is None


def test_exports_routes(server, alice, uf, tmp_path):
    ms = new_bundle(alice, uf, "alice", "export-routes", "3.1")
    msid = ms.dbId
    a = new_artifact(alice, uf, "alice", msid, "data.txt")
    upload_bin(alice, "alice", msid, a.dbId, "data.txt", b"hello\n" * 1000)

    ex = alice.Users("alice").Mysoftware(msid).Exports().Export("yaml")
    assert type(ex) is uf.SoftwareBundleExport
    assert ex.dbId is not None
    assert type(ex.status) is uf.OpStatus
    if ex.bundleName is not None:
        assert ex.bundleName == "export-routes"
    if ex.bundleVersion is not None:
        assert ex.bundleVersion == "3.1"

    st = wait_export(alice, "alice", msid, ex.dbId)
    assert type(st) is uf.OpStatus
    assert st.complete == True and not st.error
    if st.percentage is not None:
        assert st.percentage == 100

    # users/{uid}/exports lists appliance exports, as in UForge: a template holding the bundle,
    # exported, is listed there (paged and filtered); the bundle export is not.
    body = uf.appliance()
    body.name, body.version = "routes template", "1"
    body.distributionName, body.archName = "CentOS 7", "x86_64"
    body.mySoftwareUris = uf.UriList()
    body.mySoftwareUris.uri.append("users/alice/mysoftware/%d" % msid)
    app = alice.Users("alice").Appliances().Create(body=body)
    aex = alice.Users("alice").Appliances(app.dbId).Exports().Export("yaml")
    assert type(aex) is uf.ApplianceExport
    exports = alice.Users("alice").Exports.Getall(Query="routes TEMPLATE", Count=5, Offset=0,
                                                  Orderby="created", Descending=True)
    assert type(exports) is uf.ApplianceExports
    assert exports.applianceExports is not None
    listed = [e.dbId for e in exports.applianceExports.applianceExport]
    assert aex.dbId in listed and ex.dbId not in listed, listed
    mine = [e for e in exports.applianceExports.applianceExport if e.dbId == aex.dbId]
    assert type(mine[0]) is uf.ApplianceExport
    if mine[0].applianceName is not None:
        assert mine[0].applianceName == "routes template"
    none = alice.Users("alice").Exports.Getall(Query="no such template")
    assert none.total == 0

    statuses = alice.Users("alice").Exports.Statuses.Getallstatus(Ae=str(aex.dbId))
    assert type(statuses) is uf.OpStatuses
    assert statuses.statuses is not None
    assert all(type(s) is uf.OpStatus for s in statuses.statuses.status)
    assert [s.dbId for s in statuses.statuses.status] == [aex.dbId]

    data = alice.Users("alice").Mysoftware(msid).Exports(ex.dbId).Downloads.Download()
    assert isinstance(data, bytes) and data[:2] == b"\x1f\x8b"

    assert alice.Users("alice").Mysoftware(msid).Exports(ex.dbId).Delete() in (b"", None)
    alice.Users("alice").Appliances(app.dbId).Exports(aex.dbId).Delete()
    exports = alice.Users("alice").Exports.Getall()
    assert aex.dbId not in [e.dbId for e in (exports.applianceExports.applianceExport or [])]
    statuses = alice.Users("alice").Exports.Statuses.Getallstatus()
    assert aex.dbId not in [s.dbId for s in (statuses.statuses.status or [])]
