"""The Satchel server under test (temp data dir, free loopback port, users alice, bob and
root) and helpers shared by the SDK tests."""

import io
import os
import secrets
import socket
import subprocess
import sys
import time

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdk_loader  # noqa: E402

NS = "http://www.usharesoft.com/uforge"
REPO = sdk_loader.REPO


def satchel_bin():
    return os.environ.get("SATCHEL_BIN") or os.path.join(REPO, "target", "debug", "satchel")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(extra=None):
    # Configuration comes from the command line only; stray SATCHEL_* variables of the
    # caller's shell (data dir, listen address, throttles...) must not leak into the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SATCHEL_")}
    env.setdefault("RUST_LOG", "info")
    env.update(extra or {})
    return env


class SatchelServer:
    """One `satchel serve` process with its own data dir and users."""

    USERS = {
        "alice": ["--entitlement", "software_upload"],
        "bob": ["--entitlement", "software_upload"],
        "root": ["--admin"],
    }

    def __init__(self, workdir, extra_env=None):
        self.bin = satchel_bin()
        if not os.access(self.bin, os.X_OK):
            pytest.fail("satchel binary not found at %s (set SATCHEL_BIN or build it first)"
                        % self.bin, pytrace=False)
        self.workdir = str(workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.env = _child_env(extra_env)
        self.passwords = {}
        for login, flags in self.USERS.items():
            pw = "pw-%s-%s" % (login, secrets.token_hex(8))
            r = subprocess.run(
                [self.bin, "admin", "--data-dir", self.data_dir, "user", "add", login,
                 "--password-stdin"] + flags,
                input=(pw + "\n").encode(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=self.env, timeout=60)
            if r.returncode != 0:
                pytest.fail("satchel admin user add %s failed (%d):\n%s"
                            % (login, r.returncode, r.stdout.decode("utf-8", "replace")),
                            pytrace=False)
            self.passwords[login] = pw
        self.proc = None
        self.log_path = os.path.join(self.workdir, "satchel.log")

    def start(self):
        for attempt in range(3):
            self.port = _free_port()
            self.root_url = "http://127.0.0.1:%d" % self.port
            self.api_url = self.root_url + "/api"
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [self.bin, "serve", "--listen", "127.0.0.1:%d" % self.port,
                 "--data-dir", self.data_dir],
                stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                stdin=subprocess.DEVNULL)
            deadline = time.time() + 60
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if requests.get(self.api_url + "/status", timeout=2).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            self.stop()
        pytest.fail("satchel serve did not answer GET /api/status; log:\n%s" % self.log_tail(),
                    pytrace=False)

    def log_tail(self, n=60):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    # ---- helpers

    def api(self, login, password=None):
        app = sdk_loader.load().application
        pw = self.passwords[login] if password is None else password
        # headers: a fresh dict each time (the SDK mutates the one it is given)
        return app.Api(self.api_url, username=login, password=pw, headers={}, timeout=60)

    def auth(self, login):
        return (login, self.passwords[login])


# ----------------------------------------------------------------------- shared helpers

def uforge_error(excinfo, uf):
    """The UForgeError an SDK call raised (the SDK raises Exception(UForgeError-object))."""
    e = excinfo.value
    assert len(e.args) >= 1, "SDK exception without argument: %r" % (e,)
    err = e.args[0]
    assert type(err) is uf.UForgeError, \
        "SDK raised %r, not Exception(UForgeError): the error body did not parse" % (err,)
    # hammr's get_uforge_exception concatenates these: they must all be present
    assert err.statusCode is not None
    assert err.requestMethod is not None and err.requestUri is not None
    assert err.localizedErrorMsg is not None and err.localizedErrorMsg.message
    hammr_text = ("UForge Error '" + str(err.statusCode) + "' with method: " + err.requestMethod
                  + " " + err.requestUri + "\n" + "Message:\n\t" + err.localizedErrorMsg.message)
    assert hammr_text
    return err


def new_bundle(api, uf, login, name, version="1.0", description=None):
    body = uf.mySoftware()
    body.name = name
    body.version = version
    if description is not None:
        body.description = description
    ms = api.Users(login).Mysoftware().Create(body=body)
    assert type(ms) is uf.MySoftware, "POST mysoftware returned %r" % (ms,)
    return ms


def new_artifact(api, uf, login, msid, name, kind="file", parent=None):
    body = uf.softwareArtifact()
    body.name = name
    body.type = kind
    if parent is None:
        a = api.Users(login).Mysoftware(msid).Artifacts().Add(body=body)
    else:
        a = api.Users(login).Mysoftware(msid).Artifacts(parent).Subsoftwareartifacts.Addchild(
            body=body)
    assert type(a) is uf.SoftwareArtifact, "artifact creation returned %r" % (a,)
    return a


def upload_bin(api, login, msid, said, filename, data):
    return api.Users(login).Mysoftware(msid).Artifacts(said).Bin(filename).Upload(
        body=io.BytesIO(data))
