"""Each route's raw reply, fetched with plain requests and the SDK's headers: the document's
root element is namespace-prefixed in http://www.usharesoft.com/uforge, Content-Type is exactly
application/xml (the SDK compares it with ==, anything else is returned as bytes unparsed), and
the SDK's pyxb bindings accept the document as the expected type."""

import time
import xml.dom.minidom

import requests

from satchel_harness import NS

SDK_HEADERS = {"Content-Type": "application/xml", "Accept": "application/xml"}

MS = ('<ns1:mySoftware xmlns:ns1="%s"><name>%%s</name><version>%%s</version>'
      '<description>raw</description></ns1:mySoftware>' % NS)
SA = ('<ns1:softwareArtifact xmlns:ns1="%s"><name>%%s</name><type>%%s</type>'
      '</ns1:softwareArtifact>' % NS)


class Raw:
    def __init__(self, server, uf, login="alice"):
        self.base = server.api_url
        self.auth = server.auth(login)
        self.uf = uf
        self.checked = []

    def call(self, method, path, data=None, params=None, auth=True, headers=None):
        return requests.request(method, self.base + path, data=data, params=params,
                                auth=self.auth if auth else None,
                                headers=dict(headers or SDK_HEADERS), timeout=60)

    def xml(self, method, path, element, binding, status=(200,), **kw):
        r = self.call(method, path, **kw)
        where = "%s %s" % (method, path)
        assert r.status_code in status, "%s: HTTP %s, expected %s: %s" % (
            where, r.status_code, status, r.text[:500])
        check_document(r, self.uf, element, binding, where)
        self.checked.append(where)
        return self.uf.CreateFromDocument(r.content)


def check_document(r, uf, element, binding, where):
    ct = r.headers.get("Content-Type")
    assert ct == "application/xml", "%s: Content-Type %r, must be exactly application/xml" \
        % (where, ct)
    doc = xml.dom.minidom.parseString(r.content)
    root = doc.documentElement
    assert root.namespaceURI == NS, "%s: root namespace %r" % (where, root.namespaceURI)
    assert root.prefix, "%s: root element <%s> is not prefixed" % (where, root.tagName)
    assert root.localName == element, "%s: root element %s, expected %s" % (
        where, root.localName, element)
    obj = uf.CreateFromDocument(r.content)  # pyxb validates against the schema
    assert type(obj) is binding, "%s: bindings parsed %r, expected %s" % (
        where, type(obj), binding.__name__)
    return obj


def check_error(raw, r, status, where):
    assert r.status_code == status, "%s: HTTP %s, expected %s: %s" % (
        where, r.status_code, status, r.text[:300])
    e = check_document(r, raw.uf, "uforgeError", raw.uf.UForgeError, where)
    assert e.statusCode == status
    return e


def test_every_route_raw(server, uf):
    raw = Raw(server, uf)
    u = "/users/alice"
    raw.xml("GET", "/status", "serviceStatus", uf.ServiceStatus, headers={
        "Accept": "application/xml"}, auth=False)
    raw.xml("GET", u, "user", uf.User)

    ms = raw.xml("POST", u + "/mysoftware", "mySoftware", uf.MySoftware, status=(200, 201),
                 data=MS % ("raw-bundle", "1.0"))
    m = "%s/mysoftware/%s" % (u, ms.dbId)
    raw.xml("GET", u + "/mysoftware", "mySoftwareList", uf.MySoftwareList)
    raw.xml("GET", m, "mySoftware", uf.MySoftware)
    raw.xml("PUT", m, "mySoftware", uf.MySoftware, data=MS % ("raw-bundle", "1.0"))
    clone = raw.xml("POST", m + "/clone", "mySoftware", uf.MySoftware, status=(200, 201),
                    data=MS % ("raw-clone", "1.1"))

    f = raw.xml("POST", m + "/artifacts", "softwareArtifact", uf.SoftwareArtifact,
                status=(200, 201), data=SA % ("a.txt", "file"))
    a = "%s/artifacts/%s" % (m, f.dbId)
    raw.xml("GET", m + "/artifacts", "softwareArtifacts", uf.SoftwareArtifacts)
    raw.xml("GET", a, "softwareArtifact", uf.SoftwareArtifact)
    raw.xml("PUT", a, "softwareArtifact", uf.SoftwareArtifact, data=SA % ("a.txt", "file"))
    raw.xml("POST", a + "/bin/a.txt", "softwareArtifact", uf.SoftwareArtifact,
            status=(200, 201), data=b"hello raw\n")
    r = raw.call("GET", a + "/bin/a.txt")
    assert r.status_code == 200 and r.content == b"hello raw\n"
    assert r.headers.get("Content-Type") != "application/xml", \
        "file bytes served as application/xml: the SDK would try to parse them"
    folder = raw.xml("POST", m + "/artifacts", "softwareArtifact", uf.SoftwareArtifact,
                     status=(200, 201), data=SA % ("dir", "folder"))
    child = raw.xml("POST", "%s/artifacts/%s/subsoftwareartifacts" % (m, folder.dbId),
                    "softwareArtifact", uf.SoftwareArtifact, status=(200, 201),
                    data=SA % ("child.txt", "file"))
    raw.xml("POST", "%s/artifacts/%s/bin/child.txt" % (m, child.dbId), "softwareArtifact",
            uf.SoftwareArtifact, status=(200, 201), data=b"child\n")

    lic = raw.xml("POST", m + "/licenses/0/LICENSE", "license", uf.License, status=(200, 201),
                  data=b"license text\n")
    r = raw.call("GET", "%s/licenses/%s" % (m, lic.dbId))
    assert r.status_code == 200 and r.content == b"license text\n"
    assert r.headers.get("Content-Type") != "application/xml"
    logo = raw.xml("POST", m + "/logo/0/logo.png", "logo", uf.Logo, status=(200, 201),
                   data=b"\x89PNG\r\n\x1a\nraw")
    for path in ("%s/logo/%s" % (m, logo.dbId), "%s/logo/%s/logo.png" % (m, logo.dbId)):
        r = raw.call("GET", path)
        assert r.status_code == 200 and r.content == b"\x89PNG\r\n\x1a\nraw", path
        assert r.headers.get("Content-Type") != "application/xml"

    ex = raw.xml("POST", m + "/exports", "softwareBundleExport", uf.SoftwareBundleExport,
                 status=(201,), params={"outputFormat": "yaml"})
    assert type(ex.status) is uf.OpStatus
    e = "%s/exports/%s" % (m, ex.dbId)
    deadline = time.time() + 120
    while True:
        st = raw.xml("GET", e + "/status", "status", uf.OpStatus)
        if st.complete or st.error:
            break
        assert time.time() < deadline
        time.sleep(0.1)
    assert st.complete and not st.error, "export failed: %s %s" % (st.message, st.errorMessage)
    raw.xml("GET", e, "softwareBundleExport", uf.SoftwareBundleExport)
    r = raw.call("GET", e + "/downloads")
    assert r.status_code == 200
    assert r.headers.get("Content-Type") == "application/x-gzip", r.headers.get("Content-Type")
    assert r.content[:2] == b"\x1f\x8b"
    raw.xml("GET", u + "/exports", "applianceExports", uf.ApplianceExports)
    raw.xml("GET", u + "/exports/statuses", "statuses", uf.OpStatuses)

    # container templates and images
    ct = raw.xml("POST", m + "/templates", "containerTemplate", uf.ContainerTemplate,
                 status=(201,), data="")
    t = "%s/templates/%s" % (m, ct.dbId)
    raw.xml("POST", m + "/templates", "containerTemplate", uf.ContainerTemplate, status=(201,),
            data=('<ns1:containerTemplate xmlns:ns1="%s"><distribution><arch>x86_64</arch>'
                  '<name>CentOS</name><version>7</version></distribution></ns1:containerTemplate>' % NS))
    raw.xml("GET", m + "/templates", "containerTemplates", uf.ContainerTemplates)
    raw.xml("GET", t, "containerTemplate", uf.ContainerTemplate)
    raw.xml("GET", t + "/formats", "imageFormats", uf.ImageFormats)
    img = raw.xml("POST", t + "/images", "image", uf.Image, status=(201,),
                  data=('<ns1:image xmlns:ns1="%s"><compress>true</compress><format><name>docker'
                        '</name></format><name>raw</name></ns1:image>' % NS))
    i = "%s/images/%s" % (t, img.dbId)
    deadline = time.time() + 120
    while not raw.xml("GET", i + "/status", "status", uf.OpStatus).complete:
        assert time.time() < deadline
        time.sleep(0.1)
    got = raw.xml("GET", i, "image", uf.Image)
    raw.xml("GET", t + "/images", "images", uf.Images)
    every = raw.xml("GET", u + "/images", "images", uf.Images)
    assert img.dbId in [x.dbId for x in every.images.image]
    # what `hammr image list / info` read of an image
    assert got.targetFormat.name and got.targetFormat.format.name == "docker"
    assert got.parentUri.endswith("/templates/%s" % ct.dbId)
    r = raw.call("GET", i + "/downloads", params={"downloadId": got.downloadKey}, auth=False)
    assert r.status_code == 200 and r.headers.get("Content-Type") == "application/x-tar"
    assert "Content-Encoding" not in r.headers and r.content[:2] == b"\x1f\x8b"
    check_error(raw, raw.call("GET", i + "/downloads", params={"downloadId": got.downloadKey},
                              auth=False), 410, "a spent downloadId")
    raw.xml("DELETE", i + "/status", "status", uf.OpStatus)  # cancel after completion: unchanged
    for path in (i, t):
        r = raw.call("DELETE", path)
        assert r.status_code == 204 and r.content == b"", path

    # deletions: 204, no body
    for path in (e, "%s/licenses/%s" % (m, lic.dbId), "%s/logo/%s" % (m, logo.dbId), a,
                 "%s/mysoftware/%s" % (u, clone.dbId)):
        r = raw.call("DELETE", path)
        assert r.status_code == 204 and r.content == b"", "DELETE %s: %s %r" % (
            path, r.status_code, r.content[:200])

    # errors are uforgeError documents too
    check_error(raw, raw.call("GET", e + "/status"), 404, "status of a deleted export")
    check_error(raw, raw.call("GET", e + "/downloads"), 404, "download of a deleted export")
    check_error(raw, raw.call("GET", u + "/mysoftware/987654321"), 404, "missing mySoftware")
    r = raw.call("GET", u + "/mysoftware/not-a-number")
    assert r.status_code in (400, 404), "non-numeric mySoftware id: HTTP %s" % r.status_code
    check_error(raw, r, r.status_code, "non-numeric mySoftware id")
    check_error(raw, raw.call("POST", m + "/exports", params={"outputFormat": "xml"}), 400,
                "outputFormat=xml")
    r = requests.get(raw.base + u, auth=("alice", "wrong"), headers=SDK_HEADERS, timeout=30)
    check_error(raw, r, 401, "wrong password")
    r = requests.get(raw.base + u, headers=SDK_HEADERS, timeout=30)
    check_error(raw, r, 401, "no credentials")


def test_error_bodies_parse_through_sdk_parser(server, sdk):
    """_Objects.parseString (how the SDK parses every reply) on raw error bodies."""
    r = requests.get(server.api_url + "/users/alice/mysoftware/987654321",
                     auth=server.auth("alice"), headers=SDK_HEADERS, timeout=30)
    obj = sdk.application._Objects.parseString(r.content, True)
    assert type(obj) is sdk.uforge.UForgeError and obj.statusCode == 404
