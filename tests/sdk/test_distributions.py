"""Base distributions through the real SDK: an admin registers a base (`satchel admin distribution
add`, from an OCI image layout archive built here), the SDK lists it (`Distributions.Getall`,
`Distributions(Id=...).Get`, parsed by its pyxb bindings), and a container template created on it
generates an image that names its base (`image.distributionName`)."""

import hashlib
import io
import json
import subprocess
import tarfile
import time

import pytest

from satchel_harness import new_artifact, new_bundle, upload_bin


def _member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _oci_archive(path):
    """A one-layer image (a file in /etc) as `podman save --format oci-archive` would write it."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        _member(t, "etc/os-release", b"NAME=sdk-base\n")
    layer = layer_buf.getvalue()

    def desc(media, data):
        return {"mediaType": media, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                "size": len(data)}

    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Env": ["BASE=sdk"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", layer)],
    }).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        desc("application/vnd.oci.image.manifest.v1+json", manifest)]}).encode()
    with tarfile.open(path, mode="w", format=tarfile.GNU_FORMAT) as t:
        _member(t, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _member(t, "index.json", index)
        for blob in (manifest, config, layer):
            _member(t, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob)


@pytest.fixture(scope="module")
def registered(server, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("base") / "base.oci.tar")
    _oci_archive(path)
    r = subprocess.run(
        [server.bin, "admin", "--data-dir", server.data_dir, "distribution", "add",
         "Ubuntu", "24.04", "x86_64", "--oci-archive", path],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=server.env, timeout=120)
    assert r.returncode == 0, r.stdout.decode("utf-8", "replace")
    return ("Ubuntu", "24.04", "x86_64")


def test_the_sdk_lists_a_distribution_and_generates_an_image_on_it(server, alice, uf, registered):
    listed = alice.Distributions().Getall()
    assert type(listed) is uf.Distributions, "Getall returned %r" % (listed,)
    found = [d for d in listed.distributions.distribution
             if (d.name, d.version, d.arch) == registered]
    assert len(found) == 1, listed.toxml(encoding="utf-8")
    d = found[0]
    assert d.active and d.visible and d.size > 0
    got = alice.Distributions(Id=d.dbId).Get()
    assert type(got) is uf.Distribution and got.dbId == d.dbId and got.name == "Ubuntu"

    # A template picked from the listing, as a client would.
    ms = new_bundle(alice, uf, "alice", "on-base", "1.0")
    a = new_artifact(alice, uf, "alice", ms.dbId, "hello.txt")
    upload_bin(alice, "alice", ms.dbId, a.dbId, "hello.txt", b"hello\n")
    body = uf.containerTemplate()
    pick = uf.distribution()
    pick.name, pick.version, pick.arch = d.name, d.version, d.arch
    body.distribution = pick
    tree = alice.Users("alice").Mysoftware(ms.dbId).Templates
    ct = tree().Create(body=body)
    assert ct.distribution.name == "Ubuntu" and ct.distribution.version == "24.04"

    img = uf.image()
    img.compress = True
    fmt = uf.imageFormat()
    fmt.name = "docker"
    img.format = fmt
    img = alice.Users("alice").Mysoftware(ms.dbId).Templates(ct.dbId).Images().Generate(body=img)
    assert type(img) is uf.Image
    assert img.distributionName == "Ubuntu 24.04 x86_64"
    deadline = time.time() + 120
    while True:
        st = alice.Users("alice").Mysoftware(ms.dbId).Templates(ct.dbId).Images(
            Tiid=img.dbId).Status.Get()
        if st.complete or st.error:
            break
        assert time.time() < deadline
        time.sleep(0.1)
    assert st.complete and not st.error, st.toxml(encoding="utf-8")
    done = alice.Users("alice").Mysoftware(ms.dbId).Templates(ct.dbId).Images(
        Tiid=img.dbId).Get()
    assert done.distributionName == "Ubuntu 24.04 x86_64" and done.imageCreated
