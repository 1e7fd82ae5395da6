"""A schemathesis check: every error is in its face's own format.

/api/... answers a `uforgeError` document (XML by default, JSON when asked), every other path
CloudAPI's `{"code": ..., "message": ...}`. Loaded through SCHEMATHESIS_HOOKS by run.sh."""

import json
from urllib.parse import urlsplit

import schemathesis


def _header(response, name):
    v = response.headers.get(name.lower()) or response.headers.get(name)
    if isinstance(v, (list, tuple)):
        return v[0] if v else ""
    return v or ""


@schemathesis.check
def error_in_face_format(ctx, response, case):
    status = response.status_code
    if status < 400:
        return None
    path = urlsplit(response.request.url).path
    ctype = _header(response, "content-type").split(";")[0].strip()
    body = response.content or b""
    if path == "/api" or path.startswith("/api/"):
        if ctype == "application/xml":
            text = body.decode("utf-8", "replace")
            if "uforgeError" not in text or f"<statusCode>{status}</statusCode>" not in text:
                raise AssertionError(f"{status} on {path} is not a uforgeError: {text[:300]!r}")
        elif ctype == "application/json":
            doc = json.loads(body)
            if doc.get("statusCode") != status or "message" not in doc.get("localizedErrorMsg", {}):
                raise AssertionError(f"{status} on {path} is not a uforgeError: {doc!r:.300}")
        else:
            raise AssertionError(f"{status} on {path} has content type {ctype!r}, not a uforgeError")
    else:
        if ctype != "application/json":
            raise AssertionError(f"{status} on {path} has content type {ctype!r}, not CloudAPI JSON")
        doc = json.loads(body)
        if not isinstance(doc.get("code"), str) or not isinstance(doc.get("message"), str):
            raise AssertionError(f"{status} on {path} is not a CloudAPI error: {doc!r:.300}")
    return None
