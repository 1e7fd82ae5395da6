"""hammr's ``image list``, ``image info``, ``image download`` and ``image delete``: their own code
(``hammr_image`` loads class ``Image`` from the sdist) through the real SDK against Satchel, for
container images published to the pull endpoint (pimages) and not."""

import time

import pytest

import hammr_image
from satchel_harness import new_artifact, new_bundle, upload_bin


def _wait(get, timeout=120):
    deadline = time.time() + timeout
    while True:
        st = get()
        if st.complete or st.error or st.cancelled:
            return st
        assert time.time() < deadline, st.toxml(encoding="utf-8")
        time.sleep(0.1)


def _image(api, uf, msid, tid, name):
    body = uf.image()
    body.name = name
    body.compress = True
    fmt = uf.imageFormat()
    fmt.name = "docker"
    body.format = fmt
    img = api.Users("alice").Mysoftware(msid).Templates(tid).Images().Generate(body=body)
    st = _wait(lambda: api.Users("alice").Mysoftware(msid).Templates(tid)
               .Images(Tiid=img.dbId).Status.Get())
    assert st.complete and not st.error, st.toxml(encoding="utf-8")
    return img.dbId


@pytest.fixture(scope="module")
def images(server, alice, uf):
    """Two generated images of one bundle: one on a Debian template, published; one on a template
    with no distribution."""
    ms = new_bundle(alice, uf, "alice", "hammr-img", "3.1", "for hammr's image commands")
    a = new_artifact(alice, uf, "alice", ms.dbId, "run.sh")
    upload_bin(alice, "alice", ms.dbId, a.dbId, "run.sh", b"#!/bin/sh\necho hi\n")
    tpl = uf.containerTemplate()
    d = uf.distribution()
    d.name = "Debian"
    d.version = "12"
    d.arch = "x86_64"
    tpl.distribution = d
    debian = alice.Users("alice").Mysoftware(ms.dbId).Templates().Create(body=tpl).dbId
    bare = alice.Users("alice").Mysoftware(ms.dbId).Templates().Create(
        body=uf.containerTemplate()).dbId
    published = _image(alice, uf, ms.dbId, debian, "hammr-img")
    plain = _image(alice, uf, ms.dbId, bare, "hammr-bare")
    tree = alice.Users("alice").Mysoftware(ms.dbId).Templates(debian).Images(Tiid=published)
    # As hammr's publish sends it: the subtype, under the publishImage element.
    p = tree.Pimages().Publish(body=uf.PublishImageDocker(), element_name="ns1:publishImage")
    assert type(p) is uf.PublishImageDocker, p
    st = _wait(lambda: alice.Users("alice").Mysoftware(ms.dbId).Templates(debian)
               .Images(Tiid=published).Pimages(Ptiid=p.dbId).Status.Get())
    assert st.complete and not st.error, st.toxml(encoding="utf-8")
    return {"msid": ms.dbId, "debian": debian, "bare": bare, "published": published,
            "plain": plain, "pimage": p.dbId}


def test_sdk_pimage_documents(server, alice, uf, images):
    listed = alice.Users("alice").Pimages.Getall()
    assert type(listed) is uf.PublishImages
    (p,) = listed.publishImages.publishImage
    assert type(p) is uf.PublishImageDocker
    assert p.status.complete and p.repositoryName == "hammr-img" and p.tagName == "3.1"
    assert p.cloudId == "127.0.0.1:%d/alice/hammr-img:3.1" % server.port
    assert p.credAccount.targetPlatform.name == "Docker"
    tree = alice.Users("alice").Mysoftware(images["msid"]).Templates(images["debian"])
    pkgs = tree.Images(Tiid=images["published"]).Pkgs.Getall()
    assert type(pkgs) is uf.ImagePkgs and pkgs.total == 0
    st = alice.Users("alice").Images.Status.Get(Img=str(images["published"]))
    assert type(st) is uf.OpStatuses
    assert [s.complete for s in st.statuses.status] == [True]


def test_image_list(alice, images):
    # The server is the session's: other modules' images are listed too.
    n = len(alice.Users("alice").Images.Getall().images.image)
    assert n >= 2
    cmd, printer = hammr_image.load(alice, "alice")
    assert cmd.do_list("") == 0, printer.messages
    said = [t for (_, t) in printer.messages]
    assert "Found %d images" % n in said and "Found 1 publications" in said, said


def test_image_info_published(alice, images, capsys):
    cmd, printer = hammr_image.load(alice, "alice")
    assert cmd.do_info("--id %d" % images["published"]) == 0, printer.messages
    out = capsys.readouterr().out
    assert "Debian 12 x86_64" in out, out
    assert "alice/hammr-img:3.1" in out, out


def test_image_download_prints_docker_pull(server, alice, images):
    cmd, printer = hammr_image.load(alice, "alice")
    assert cmd.do_download("--id %d" % images["published"]) is None, printer.messages
    said = [t for (_, t) in printer.messages]
    assert "docker pull 127.0.0.1:%d/alice/hammr-img:3.1" % server.port in said, said
    assert not printer.errors(), printer.messages


def test_image_delete_runs_hammrs_own_check(alice, images):
    # hammr 3.8.13 deletes only appliance and scan images (image.py delete_image); for a container
    # template's image its own code refuses with "Internal error: image cannot be deleted." before
    # any request, and the image stays.
    cmd, printer = hammr_image.load(alice, "alice")
    assert cmd.do_delete("--id %d" % images["plain"]) == 2
    assert printer.errors() == ["Internal error: image cannot be deleted."], printer.messages
    ids = [i.dbId for i in alice.Users("alice").Images.Getall().images.image]
    assert images["plain"] in ids
