"""Container templates, generated images and one-time downloads through the real SDK: every
document is built and parsed by the SDK's own pyxb bindings (containerTemplate, image,
imageFormat, status, uforgeError), and every call is the SDK's `Users().Mysoftware().Templates()`
tree as application.py generates it."""

import hashlib
import io
import tarfile
import time

import pytest

from satchel_harness import new_artifact, new_bundle, upload_bin, uforge_error


def _tree(api, login, msid):
    """A fresh call chain: the SDK consumes the ids set on it (Uid, Msid...) at each call."""
    return api.Users(login).Mysoftware(msid).Templates


def _templates(api, login, msid):
    return lambda *ids: _tree(api, login, msid)(*ids)


def _generate(api, uf, login, msid, tid, name, compress):
    body = uf.image()
    body.name = name
    body.compress = compress
    fmt = uf.imageFormat()
    fmt.name = "docker"
    body.format = fmt
    img = _tree(api, login, msid)(tid).Images().Generate(body=body)
    assert type(img) is uf.Image, "Generate returned %r" % (img,)
    assert img.dbId is not None and img.compress == compress
    assert type(img.status) is uf.OpStatus
    return img


def _wait(api, uf, login, msid, tid, itid, timeout=120):
    deadline = time.time() + timeout
    while True:
        st = _tree(api, login, msid)(tid).Images(Tiid=itid).Status.Get()
        assert type(st) is uf.OpStatus, "Status.Get returned %r" % (st,)
        assert st.percentage is None or 0 <= st.percentage <= 100
        if st.complete or st.error or st.cancelled:
            return st
        assert time.time() < deadline, st.toxml(encoding="utf-8")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def bundle(server, alice, uf):
    ms = new_bundle(alice, uf, "alice", "sdk-image", "2.0", "packaged as a container")
    files = {"hello.sh": b"#!/bin/sh\necho hello\n", "data.bin": bytes(range(256)) * 4000}
    for name, data in files.items():
        a = new_artifact(alice, uf, "alice", ms.dbId, name)
        upload_bin(alice, "alice", ms.dbId, a.dbId, name, data)
    return ms.dbId, files


def test_template_documents_roundtrip(server, alice, uf, bundle):
    msid, _ = bundle
    t = _templates(alice, "alice", msid)
    empty = t().Create(body=uf.containerTemplate())
    assert type(empty) is uf.ContainerTemplate, "Create returned %r" % (empty,)
    assert empty.distribution is None
    body = uf.containerTemplate()
    d = uf.distribution()
    d.name = "Ubuntu"
    d.version = "22.04"
    d.arch = "x86_64"
    body.distribution = d
    ct = t().Create(body=body)
    assert ct.distribution.name == "Ubuntu" and ct.distribution.arch == "x86_64"
    assert ct.imagesUri.endswith("/templates/%d/images" % ct.dbId)
    got = t(ct.dbId).Get()
    assert type(got) is uf.ContainerTemplate and got.dbId == ct.dbId
    listed = t().Getall()
    assert type(listed) is uf.ContainerTemplates
    ids = [x.dbId for x in listed.containerTemplates.containerTemplate]
    assert empty.dbId in ids and ct.dbId in ids
    formats = t(ct.dbId).Formats.Getall()
    assert type(formats) is uf.ImageFormats
    assert [f.name for f in formats.imageFormats.imageFormat] == ["docker"]
    t(empty.dbId).Delete()  # 204: the SDK hands back the empty body
    with pytest.raises(Exception) as ei:
        t(empty.dbId).Get()
    assert uforge_error(ei, uf).statusCode == 404


def test_generate_and_download_once(server, alice, bob, uf, bundle, tmp_path):
    msid, files = bundle
    t = _templates(alice, "alice", msid)
    tid = t().Create(body=uf.containerTemplate()).dbId
    img = _generate(alice, uf, "alice", msid, tid, "sdkimg", True)
    st = _wait(alice, uf, "alice", msid, tid, img.dbId)
    assert st.complete and not st.error, st.toxml(encoding="utf-8")

    got = t(tid).Images(Tiid=img.dbId).Get()
    assert type(got) is uf.Image
    assert got.downloadKey and len(got.downloadKey) >= 32
    assert got.fileName.endswith(".oci.tar.gz") and got.fileSize > 0
    assert got.format.name == "docker" and got.compress

    # The SDK sends Basic credentials along; with a downloadId they do not matter (bob's here).
    path = tmp_path / got.fileName
    with open(str(path), "wb") as f:
        r = _tree(bob, "alice", msid)(tid).Images(Itid=img.dbId).Downloads.Download(
            Downloadid=got.downloadKey, streamingResponseFile=f)
    assert r is None, "the download was not streamed to the file: %r" % (r[:200],)
    data = path.read_bytes()
    assert len(data) == got.fileSize
    assert hashlib.sha256(data).hexdigest() == got.sha256sum
    with tarfile.open(str(path)) as tar:
        names = tar.getnames()
        assert "oci-layout" in names and "index.json" in names
        index = tar.extractfile("index.json").read()
    assert b"application/vnd.oci.image.index.v1+json" in index

    # The id is spent: the SDK raises the uforgeError.
    with pytest.raises(Exception) as ei:
        with open(str(tmp_path / "again"), "wb") as f:
            _tree(alice, "alice", msid)(tid).Images(Itid=img.dbId).Downloads.Download(
                Downloadid=got.downloadKey, streamingResponseFile=f)
    err = uforge_error(ei, uf)
    assert err.statusCode in (403, 410)
    assert "used" in err.localizedErrorMsg.message

    # A fresh id works with the named-file route too.
    fresh = t(tid).Images(Tiid=img.dbId).Get().downloadKey
    assert fresh != got.downloadKey
    with open(str(tmp_path / "named"), "wb") as f:
        r = _tree(alice, "alice", msid)(tid).Images(Itid=img.dbId).Downloads(
            got.fileName).Downloadfile(Downloadid=fresh, streamingResponseFile=f)
    assert (tmp_path / "named").read_bytes() == data

    t(tid).Images(Tiid=img.dbId).Delete()
    with pytest.raises(Exception) as ei:
        t(tid).Images(Tiid=img.dbId).Get()
    assert uforge_error(ei, uf).statusCode == 404


def test_uncompressed_images_cannot_be_downloaded(server, alice, uf, bundle, tmp_path):
    msid, _ = bundle
    t = _templates(alice, "alice", msid)
    tid = t().Create(body=uf.containerTemplate()).dbId
    img = _generate(alice, uf, "alice", msid, tid, "plain", False)
    assert _wait(alice, uf, "alice", msid, tid, img.dbId).complete
    got = t(tid).Images(Tiid=img.dbId).Get()
    assert got.downloadKey is None and not got.compress
    with pytest.raises(Exception) as ei:
        with open(str(tmp_path / "x"), "wb") as f:
            t(tid).Images(Itid=img.dbId).Downloads.Download(streamingResponseFile=f)
    err = uforge_error(ei, uf)
    assert err.statusCode == 403 and "compress" in err.localizedErrorMsg.message


def test_cancel_and_other_users(server, alice, bob, uf, bundle):
    msid, _ = bundle
    t = _templates(alice, "alice", msid)
    tid = t().Create(body=uf.containerTemplate()).dbId
    img = _generate(alice, uf, "alice", msid, tid, "cancelled", True)
    st = t(tid).Images(Tiid=img.dbId).Status.Cancel()
    # Either it was still queued/running (now cancelled) or it had already finished.
    assert type(st) is uf.OpStatus and (st.cancelled or st.complete)
    for call in (
        lambda: _tree(bob, "alice", msid)(tid).Get(),
        lambda: _tree(bob, "alice", msid)(tid).Images(Tiid=img.dbId).Get(),
        lambda: _tree(bob, "alice", msid)(tid).Images(Tiid=img.dbId).Status.Get(),
        lambda: _tree(bob, "alice", msid)(tid).Images().Generate(body=uf.image()),
    ):
        with pytest.raises(Exception) as ei:
            call()
        assert uforge_error(ei, uf).statusCode == 404
