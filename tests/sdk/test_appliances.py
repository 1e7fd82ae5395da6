"""Appliance templates through the real SDK: hammr 3.8.13's `template list` and `template delete`
(hammr/commands/template/template.py; hammr 3.8.13 has no `template info`, so the info test reads
what an info would: the appliance, its OS profile and packages, its bundles and boot scripts),
every document parsed by the SDK's pyxb bindings (appliance, appliances, linuxProfile, packages,
mySoftwareList, bootScript, bootScripts, uforgeError), and JSON variants over raw HTTP."""

import hashlib
import io

import pyxb
import pytest
import requests

from satchel_harness import new_bundle, uforge_error

MISSING = 987654321


def err_of(uf, fn):
    with pytest.raises(Exception) as ei:
        fn()
    return uforge_error(ei, uf)


def _apps(api, login):
    """A fresh call chain (the SDK keeps the ids set on it between calls)."""
    return api.Users(login).Appliances


def _uris(uf, uris):
    lst = uf.UriList()
    for u in uris:
        lst.uri.append(u)
    return lst


def new_appliance(api, uf, login, name, version="1.0", bundles=(), profile=None):
    body = uf.appliance()
    body.name = name
    body.version = version
    body.description = "template " + name
    body.distributionName = "CentOS 7"
    body.archName = "x86_64"
    if bundles:
        body.mySoftwareUris = _uris(uf, ["users/%s/mysoftware/%d" % (login, b) for b in bundles])
    if profile is not None:
        p = uf.linuxProfile()
        p.name = profile
        body.osProfile = p
    a = _apps(api, login)().Create(body=body)
    assert type(a) is uf.Appliance, "Create returned %r" % (a,)
    return a


@pytest.fixture(scope="module")
def bundles(server, alice, bob, uf):
    mine = [new_bundle(alice, uf, "alice", "app-%d" % i, "1.%d" % i).dbId for i in range(3)]
    theirs = new_bundle(bob, uf, "bob", "bobs-app", "1.0").dbId
    return mine, theirs


def hammr_template_list(api, uf, login):
    """hammr's do_list, call for call and field for field; returns the table rows."""
    appliances = api.Users(login).Appliances().Getall()
    appliances = appliances.appliances
    if appliances is None or not hasattr(appliances, "appliance"):
        return []
    images = api.Users(login).Images.Getall()
    images = images.images
    rows = []
    for appliance in sorted(appliances.appliance, key=lambda a: a.name):
        nb_image = 0
        if images is not None and hasattr(images, "image"):
            for image in images.image:
                if hasattr(image, "parentUri") and image.parentUri == appliance.uri:
                    nb_image += 1
        rows.append([appliance.dbId, appliance.name, str(appliance.version),
                     appliance.distributionName + " " + appliance.archName,
                     appliance.created.strftime("%Y-%m-%d %H:%M:%S"),
                     appliance.lastModified.strftime("%Y-%m-%d %H:%M:%S"), nb_image,
                     appliance.nbUpdates, "X" if appliance.imported else "",
                     "X" if appliance.shared else ""])
    return rows


def hammr_template_delete(api, uf, login, aid):
    """hammr's do_delete with --no-confirm (the Appliance type check, the table, the Delete)."""
    my_appliance = api.Users(login).Appliances(str(aid)).Get()
    assert my_appliance is not None and type(my_appliance) is uf.Appliance
    row = [my_appliance.dbId, my_appliance.name, str(my_appliance.version),
           my_appliance.distributionName + " " + my_appliance.archName,
           my_appliance.created.strftime("%Y-%m-%d %H:%M:%S"),
           my_appliance.lastModified.strftime("%Y-%m-%d %H:%M:%S"),
           len(my_appliance.imageUris.uri), my_appliance.nbUpdates,
           "X" if my_appliance.imported else "", "X" if my_appliance.shared else ""]
    api.Users(login).Appliances(my_appliance.dbId).Delete()
    return row


def test_template_list_info_and_delete(server, alice, uf, bundles):
    mine, _ = bundles
    web = new_appliance(alice, uf, "alice", "web", "2.0", bundles=[mine[1], mine[0]],
                        profile="Minimal")
    db = new_appliance(alice, uf, "alice", "db")
    assert web.uri == "users/alice/appliances/%d" % web.dbId
    assert [u for u in web.mySoftwareUris.uri] == [
        "users/alice/mysoftware/%d" % mine[1], "users/alice/mysoftware/%d" % mine[0]]
    assert web.osProfileUri.startswith("users/alice/appliances/%d/osprofile/" % web.dbId)
    assert db.osProfileUri is None and len(db.mySoftwareUris.uri) == 0

    rows = {r[0]: r for r in hammr_template_list(alice, uf, "alice")}
    assert rows[web.dbId][1:4] == ["web", "2.0", "CentOS 7 x86_64"]
    assert rows[db.dbId][1:3] == ["db", "1.0"]
    assert rows[web.dbId][6:] == [0, 0, "", ""]

    # What an info shows: the appliance, its profile and packages, its bundles, its scripts.
    got = _apps(alice, "alice")(web.dbId).Get()
    assert type(got) is uf.Appliance and got.name == "web" and got.description == "template web"
    osid = int(got.osProfileUri.rsplit("/", 1)[1])
    prof = _apps(alice, "alice")(web.dbId).Osprofile(osid).Get()
    assert type(prof) is uf.LinuxProfile, "Osprofile.Get returned %r" % (prof,)
    assert prof.name == "Minimal" and prof.dbId == osid and prof.arch == "x86_64"
    assert prof.packagesUri.endswith("/osprofile/%d/pkgs" % osid)

    pkgs = uf.packages()
    pkgs.pkgs = pyxb.BIND()
    for name, version in (("vim-enhanced", "7.4"), ("curl", None)):
        p = uf.Pkg()
        p.name = name
        if version:
            p.version = version
        p.arch = "x86_64"
        pkgs.pkgs.pkg.append(p)
    put = _apps(alice, "alice")(web.dbId).Osprofile(osid).Pkgs.Updateall(body=pkgs)
    assert type(put) is uf.PkgList
    listed = _apps(alice, "alice")(web.dbId).Osprofile(osid).Pkgs.Getall()
    assert type(listed) is uf.PkgList
    assert [(p.name, p.version, p.arch) for p in listed.pkgs.pkg] == [
        ("vim-enhanced", "7.4", "x86_64"), ("curl", None, "x86_64")]

    held = _apps(alice, "alice")(web.dbId).Mysoftware.Getall()
    assert type(held) is uf.MySoftwareList
    assert [m.dbId for m in held.mySoftwareList.mySoftware] == [mine[1], mine[0]]
    assert held.total == 2

    # hammr's delete: the appliance goes, its bundles stay.
    row = hammr_template_delete(alice, uf, "alice", web.dbId)
    assert row[:4] == [web.dbId, "web", "2.0", "CentOS 7 x86_64"] and row[6] == 0
    e = err_of(uf, lambda: _apps(alice, "alice")(web.dbId).Get())
    assert e.statusCode == 404 and str(web.dbId) in e.localizedErrorMsg.message
    for b in mine:
        assert alice.Users("alice").Mysoftware(b).Get().dbId == b
    assert web.dbId not in {r[0] for r in hammr_template_list(alice, uf, "alice")}
    hammr_template_delete(alice, uf, "alice", db.dbId)


def test_update_sets_fields_and_bundles(server, alice, uf, bundles):
    mine, theirs = bundles
    a = new_appliance(alice, uf, "alice", "upd", bundles=[mine[0]])
    body = uf.appliance()
    body.version = "1.1"
    body.mySoftwareUris = _uris(uf, ["users/alice/mysoftware/%d" % b for b in (mine[2], mine[0])])
    up = _apps(alice, "alice")(a.dbId).Update(body=body)
    assert type(up) is uf.Appliance and up.name == "upd" and up.version == "1.1"
    assert [u.rsplit("/", 1)[1] for u in up.mySoftwareUris.uri] == [str(mine[2]), str(mine[0])]

    # Another user's bundle cannot be attached: 404 as for a missing one, and nothing changes.
    body = uf.appliance()
    body.mySoftwareUris = _uris(uf, ["users/alice/mysoftware/%d" % mine[1],
                                     "users/bob/mysoftware/%d" % theirs])
    e = err_of(uf, lambda: _apps(alice, "alice")(a.dbId).Update(body=body))
    assert e.statusCode == 404 and str(theirs) in e.localizedErrorMsg.message
    held = _apps(alice, "alice")(a.dbId).Mysoftware.Getall()
    assert [m.dbId for m in held.mySoftwareList.mySoftware] == [mine[2], mine[0]]
    body = uf.appliance()
    body.name = "stolen"
    body.version = "1"
    body.mySoftwareUris = _uris(uf, ["users/bob/mysoftware/%d" % theirs])
    e = err_of(uf, lambda: _apps(alice, "alice")().Create(body=body))
    assert e.statusCode == 404
    assert "stolen" not in {x.name for x in
                            (_apps(alice, "alice")().Getall().appliances.appliance or [])}

    # One bundle at a time (raw: the SDK has no call for it).
    base = server.api_url + "/users/alice/appliances/%d/mysoftware" % a.dbId
    auth = server.auth("alice")
    r = requests.put(base + "/%d" % theirs, auth=auth, timeout=30)
    assert r.status_code == 404 and "uforgeError" in r.text
    r = requests.put(base + "/%d" % mine[1], auth=auth, timeout=30)
    assert r.status_code == 200, r.text
    got = uf.CreateFromDocument(r.content)
    assert [m.dbId for m in got.mySoftwareList.mySoftware] == [mine[2], mine[0], mine[1]]
    assert requests.delete(base + "/%d" % mine[2], auth=auth, timeout=30).status_code == 204
    assert requests.delete(base + "/%d" % mine[2], auth=auth, timeout=30).status_code == 404
    held = _apps(alice, "alice")(a.dbId).Mysoftware.Getall()
    assert [m.dbId for m in held.mySoftwareList.mySoftware] == [mine[0], mine[1]]
    _apps(alice, "alice")(a.dbId).Delete()


def test_deleting_a_bundle_detaches_it(server, alice, uf, bundles):
    mine, _ = bundles
    gone = new_bundle(alice, uf, "alice", "short-lived", "1.0").dbId
    a = new_appliance(alice, uf, "alice", "detach", bundles=[gone, mine[0]])
    alice.Users("alice").Mysoftware(gone).Delete()
    got = _apps(alice, "alice")(a.dbId).Get()
    assert [u.rsplit("/", 1)[1] for u in got.mySoftwareUris.uri] == [str(mine[0])]
    _apps(alice, "alice")(a.dbId).Delete()


def test_boot_scripts(server, alice, uf):
    a = new_appliance(alice, uf, "alice", "boot")
    made = []
    for name, order, kind in (("late.sh", 20, "everyboot"), ("early.sh", 10, "firstboot")):
        body = uf.bootScript()
        body.name = name
        body.bootOrder = order
        body.bootType = kind
        s = _apps(alice, "alice")(a.dbId).Bootscripts().Create(body=body)
        assert type(s) is uf.BootScript, "Create returned %r" % (s,)
        assert (s.name, s.bootOrder, s.bootType, s.uploaded) == (name, order, kind, False)
        made.append(s)
    late, early = made
    data = b"#!/bin/sh\necho first boot\n"
    up = _apps(alice, "alice")(a.dbId).Bootscripts(late.dbId).Bin("late.sh").Upload(
        body=io.BytesIO(data))
    assert type(up) is uf.BootScript and up.uploaded and up.size == len(data)
    assert up.sha256sum == hashlib.sha256(data).hexdigest()
    listed = _apps(alice, "alice")(a.dbId).Bootscripts().Getall()
    assert type(listed) is uf.BootScripts and listed.total == 2
    assert [s.dbId for s in listed.bootScripts.bootScript] == [early.dbId, late.dbId]

    body = uf.bootScript()
    body.bootOrder = 1
    changed = _apps(alice, "alice")(a.dbId).Bootscripts(late.dbId).Update(body=body)
    assert changed.bootOrder == 1 and changed.name == "late.sh" and changed.bootType == "everyboot"
    got = _apps(alice, "alice")(a.dbId).Get()
    assert [u.rsplit("/", 1)[1] for u in got.bootScriptUris.uri] == [str(late.dbId), str(early.dbId)]

    base = server.api_url + "/users/alice/appliances/%d/bootscripts/%d/bin" % (a.dbId, late.dbId)
    for url in (base, base + "/late.sh"):
        r = requests.get(url, auth=server.auth("alice"), timeout=30)
        assert r.status_code == 200 and r.content == data
    assert requests.get(base + "/other.sh", auth=server.auth("alice"), timeout=30).status_code == 404
    e = err_of(uf, lambda: _apps(alice, "alice")(a.dbId).Bootscripts(early.dbId).Bin().Download())
    assert e.statusCode == 404

    # The bindings refuse an unknown bootType before sending; raw XML reaches the server.
    r = requests.post(server.api_url + "/users/alice/appliances/%d/bootscripts" % a.dbId,
                      auth=server.auth("alice"), headers={"Content-Type": "application/xml"},
                      data=b'<ns0:bootScript xmlns:ns0="http://www.usharesoft.com/uforge">'
                           b'<name>bad.sh</name><bootType>sometimes</bootType></ns0:bootScript>',
                      timeout=30)
    assert r.status_code == 400
    assert uf.CreateFromDocument(r.content).statusCode == 400

    _apps(alice, "alice")(a.dbId).Bootscripts(late.dbId).Delete()
    e = err_of(uf, lambda: _apps(alice, "alice")(a.dbId).Bootscripts(late.dbId).Get())
    assert e.statusCode == 404
    assert requests.get(base, auth=server.auth("alice"), timeout=30).status_code == 404
    _apps(alice, "alice")(a.dbId).Delete()


def test_another_users_appliance_is_missing(server, alice, bob, uf, bundles):
    a = new_appliance(alice, uf, "alice", "private", profile="Minimal")
    osid = int(a.osProfileUri.rsplit("/", 1)[1])
    calls = (
        lambda api, login: _apps(api, login)(a.dbId).Get(),
        lambda api, login: _apps(api, login)(a.dbId).Mysoftware.Getall(),
        lambda api, login: _apps(api, login)(a.dbId).Osprofile(osid).Get(),
        lambda api, login: _apps(api, login)(a.dbId).Osprofile(osid).Pkgs.Getall(),
        lambda api, login: _apps(api, login)(a.dbId).Bootscripts().Getall(),
        lambda api, login: _apps(api, login)(a.dbId).Delete(),
    )
    # bob, through his own uid and through alice's: 404, as for an id that does not exist.
    theirs = [err_of(uf, lambda c=c: c(bob, "bob")) for c in calls]
    assert all(e.statusCode == 404 for e in theirs)
    assert all(err_of(uf, lambda c=c: c(bob, "alice")).statusCode == 404 for c in calls)
    assert _apps(alice, "alice")(a.dbId).Get().dbId == a.dbId
    assert "private" not in {x.name for x in (_apps(bob, "bob")().Getall().appliances.appliance or [])}
    _apps(alice, "alice")(a.dbId).Delete()
    # Once deleted, alice sees what bob saw: the same status and message.
    gone = [err_of(uf, lambda c=c: c(alice, "alice")) for c in calls]
    assert [e.localizedErrorMsg.message for e in gone] == \
           [e.localizedErrorMsg.message for e in theirs]
    e = err_of(uf, lambda: _apps(alice, "alice")(MISSING).Get())
    assert e.statusCode == 404 and str(MISSING) in e.localizedErrorMsg.message


def test_json_variants(server, alice, uf, bundles):
    mine, theirs = bundles
    auth = server.auth("alice")
    base = server.api_url + "/users/alice/appliances"
    js = {"Accept": "application/json", "Content-Type": "application/json"}
    r = requests.post(base, auth=auth, headers=js, timeout=30, json={
        "name": "json-app", "version": "3.0", "distributionName": "Ubuntu 22.04",
        "archName": "x86_64", "osProfile": {"name": "Server"},
        "mySoftwareList": {"mySoftware": [{"dbId": mine[2]}, {"uri": "users/alice/mysoftware/%d" % mine[0]}]},
    })
    assert r.status_code == 201 and r.headers["Content-Type"] == "application/json", r.text
    a = r.json()
    assert (a["name"], a["version"], a["distributionName"], a["archName"]) == \
           ("json-app", "3.0", "Ubuntu 22.04", "x86_64")
    assert a["mySoftwareUris"]["uri"] == ["users/alice/mysoftware/%d" % b for b in (mine[2], mine[0])]
    aid = a["dbId"]
    listed = requests.get(base, auth=auth, headers=js, timeout=30).json()
    assert aid in [x["dbId"] for x in listed["appliances"]["appliance"]]
    assert listed["total"] == len(listed["appliances"]["appliance"])
    prof = requests.get(base + "/%d/osprofile" % aid, auth=auth, headers=js, timeout=30).json()
    assert prof["name"] == "Server" and prof["version"] == "22.04"
    r = requests.put(base + "/%d/osprofile/%d/pkgs" % (aid, prof["dbId"]), auth=auth, headers=js,
                     timeout=30, json={"pkgs": {"pkg": [{"name": "nginx", "version": "1.18"}]}})
    assert r.status_code == 200 and r.json()["pkgs"]["pkg"] == [
        {"size": 0, "uploaded": False, "name": "nginx", "version": "1.18"}]
    # The same appliance as XML parses with the SDK bindings, and shows the same thing.
    x = _apps(alice, "alice")(aid).Get()
    assert (x.name, x.distributionName, x.archName) == ("json-app", "Ubuntu 22.04", "x86_64")
    r = requests.put(base + "/%d" % aid, auth=auth, headers=js, timeout=30,
                     json={"mySoftwareUris": {"uri": ["users/bob/mysoftware/%d" % theirs]}})
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"
    assert r.json()["statusCode"] == 404
    r = requests.get(base + "/%d" % aid, auth=("bob", server.passwords["bob"]), headers=js,
                     timeout=30)
    assert r.status_code == 404
    assert requests.delete(base + "/%d" % aid, auth=auth, timeout=30).status_code == 204
    r = requests.post(base, auth=auth, headers=js, timeout=30, json={"name": "no version"})
    assert r.status_code == 400 and r.json()["statusCode"] == 400
