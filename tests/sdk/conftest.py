"""Session fixtures: a running Satchel server and the real UForge Python SDK (sdk_loader)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdk_loader  # noqa: E402
from satchel_harness import SatchelServer  # noqa: E402


@pytest.fixture(scope="session")
def sdk():
    return sdk_loader.load()


@pytest.fixture(scope="session")
def uf(sdk):
    """The generated pyxb bindings module (uforge.objects.uforge)."""
    return sdk.uforge


@pytest.fixture(scope="session")
def server(tmp_path_factory, sdk):
    s = SatchelServer(tmp_path_factory.mktemp("satchel")).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def alice(server):
    return server.api("alice")


@pytest.fixture(scope="session")
def bob(server):
    return server.api("bob")


@pytest.fixture(scope="session")
def root(server):
    return server.api("root")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Attach the server's log tail to failures: server-side errors are usually explained there.
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        srv = getattr(item, "funcargs", {}).get("server")
        if srv is not None:
            rep.sections.append(("satchel log (tail)", srv.log_tail(40)))


