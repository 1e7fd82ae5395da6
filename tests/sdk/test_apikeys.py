"""API key pairs through the real SDK: created, listed and deleted with Users(uid).Apikeys, then
used the way hammr uses them (`Api(url, apikeys={'publickey':..., 'secretkey':...})`, hammr's
--publickey/--secretkey): the SDK's own UForgeApiKeyAuth signs every request. A wrong signature,
a revoked key and another user's key are refused like a wrong password."""

import io

import pytest

import sdk_loader
from bundle_checks import verify_export
from satchel_harness import new_artifact, new_bundle, upload_bin, uforge_error
from test_export_flow import hammr_do_export


def keyed(server, pair_or_keys):
    """An Api as hammr builds it with API keys (hammr/hammr.py: password None, headers None)."""
    if isinstance(pair_or_keys, dict):
        keys = pair_or_keys
    else:
        keys = {"publickey": pair_or_keys.publicKey, "secretkey": pair_or_keys.secretKey}
    app = sdk_loader.load().application
    return app.Api(server.api_url, username=None, password=None, headers=None, apikeys=keys,
                   timeout=60)


def create_pair(api, uf, login, name, description=None):
    body = uf.apiKeyPair()
    body.name = name
    if description is not None:
        body.description = description
    pair = api.Users(login).Apikeys.Create(body=body)
    assert type(pair) is uf.APIKeyPair, "POST apikeys returned %r" % (pair,)
    assert pair.publicKey and pair.secretKey, "the creation answer carries both keys"
    return pair


def err_of(uf, fn):
    with pytest.raises(Exception) as ei:
        fn()
    return uforge_error(ei, uf)


def wrong_password_error(server, uf):
    bad = server.api("alice", password="certainly-not-her-password")
    return err_of(uf, lambda: bad.Users("alice").Mysoftware().Getall())


def test_pairs_are_created_listed_and_deleted(server, alice, uf):
    pair = create_pair(alice, uf, "alice", "sdk-listing", "listed through the SDK")
    assert pair.name == "sdk-listing" and pair.description == "listed through the SDK"
    assert pair.uri == "users/alice/apikeys/%d" % pair.dbId
    assert pair.created is not None and pair.lastModified is None, "unused so far"

    pairs = alice.Users("alice").Apikeys.Getall()
    assert type(pairs) is uf.APIKeyPairs, "GET apikeys returned %r" % (pairs,)
    assert pairs.total == len(pairs.apiKeyPairs.apiKeyPair) >= 1
    mine = [p for p in pairs.apiKeyPairs.apiKeyPair if p.dbId == pair.dbId]
    assert len(mine) == 1 and mine[0].publicKey == pair.publicKey
    assert all(p.secretKey is None for p in pairs.apiKeyPairs.apiKeyPair), "secrets are shown once"

    # Used once, it shows its last use.
    keyed(server, pair).Users("alice").Mysoftware().Getall()
    pairs = alice.Users("alice").Apikeys.Getall()
    used = [p for p in pairs.apiKeyPairs.apiKeyPair if p.dbId == pair.dbId][0]
    assert used.lastModified is not None and used.lastModified >= used.created

    assert alice.Users("alice").Apikeys(pair.dbId).Delete() in (None, b"", "")
    pairs = alice.Users("alice").Apikeys.Getall()
    assert pair.dbId not in [p.dbId for p in (pairs.apiKeyPairs.apiKeyPair if pairs.apiKeyPairs else [])]
    assert err_of(uf, lambda: alice.Users("alice").Apikeys(pair.dbId).Delete()).statusCode == 404


def test_hammr_export_flow_signed_with_api_keys(server, alice, uf, tmp_path):
    pair = create_pair(alice, uf, "alice", "hammr")
    api = keyed(server, pair)
    # Everything below goes through UForgeApiKeyAuth: apiKey + signature in the query, no Basic.
    ms = new_bundle(api, uf, "alice", "keyed-bundle", "2.0", "exported with API keys")
    files = {"hello.txt": b"signed with an API key\n", "conf/app.conf": b"[k]\nv = 1\n"}
    a = new_artifact(api, uf, "alice", ms.dbId, "hello.txt")
    assert type(upload_bin(api, "alice", ms.dbId, a.dbId, "hello.txt", files["hello.txt"])) \
        is uf.SoftwareArtifact
    folder = new_artifact(api, uf, "alice", ms.dbId, "conf", kind="folder")
    child = new_artifact(api, uf, "alice", ms.dbId, "app.conf", parent=folder.dbId)
    upload_bin(api, "alice", ms.dbId, child.dbId, "app.conf", files["conf/app.conf"])
    lic = api.Users("alice").Mysoftware(ms.dbId).Licenses(0, "LICENSE").Uploadfile(
        body=io.BytesIO(b"license text\n"))
    assert type(lic) is uf.License

    path = str(tmp_path / "keyed-bundle.tar.gz")
    _, export, seen = hammr_do_export(api, uf, "alice", ms.dbId, "yaml", path)
    assert seen[-1].complete and not seen[-1].error
    verify_export(path, str(tmp_path), {
        "name": "keyed-bundle", "version": "2.0", "description": "exported with API keys",
        "files": files, "folders": ["conf"], "license": ("LICENSE", b"license text\n"),
        "logo": None}, "yaml")
    # The same user either way: what the key made, her password sees.
    assert alice.Users("alice").Mysoftware(ms.dbId).Get().name == "keyed-bundle"


def test_wrong_revoked_and_foreign_keys_are_refused_like_a_wrong_password(
        server, alice, bob, uf):
    reference = wrong_password_error(server, uf)
    assert reference.statusCode == 401
    a = create_pair(alice, uf, "alice", "refusals")
    b = create_pair(bob, uf, "bob", "bobs")
    ms = new_bundle(keyed(server, a), uf, "alice", "refusal-bundle", "1.0")

    def refused(api, call=None):
        e = err_of(uf, call or (lambda: api.Users("alice").Mysoftware().Getall()))
        assert e.statusCode == 401, e.localizedErrorMsg.message
        assert e.localizedErrorMsg.message == reference.localizedErrorMsg.message
        return e

    # A wrong secret: the signature does not match.
    refused(keyed(server, {"publickey": a.publicKey, "secretkey": a.secretKey[:-1] + "x"}))
    # Another user's key: alice's public key signed with bob's secret, and an unknown key.
    refused(keyed(server, {"publickey": a.publicKey, "secretkey": b.secretKey}))
    refused(keyed(server, {"publickey": "NoSuch" + a.publicKey[6:], "secretkey": a.secretKey}))
    # Bob's own pair is bob: alice's bundle does not exist for him, exactly as with his password.
    as_bob = keyed(server, b)
    e = err_of(uf, lambda: as_bob.Users("alice").Mysoftware(ms.dbId).Get())
    e_pw = err_of(uf, lambda: bob.Users("alice").Mysoftware(ms.dbId).Get())
    assert e.statusCode == e_pw.statusCode == 404
    assert e.localizedErrorMsg.message == e_pw.localizedErrorMsg.message
    assert err_of(uf, lambda: as_bob.Users("alice").Apikeys.Getall()).statusCode == 404

    # Revoked: the pair worked, is deleted, and is refused from the next request on.
    api = keyed(server, a)
    assert api.Users("alice").Mysoftware(ms.dbId).Get().dbId == ms.dbId
    alice.Users("alice").Apikeys(a.dbId).Delete()
    refused(api, lambda: api.Users("alice").Mysoftware(ms.dbId).Get())
    # Bob's pair was not touched by any of this.
    assert type(as_bob.Users("bob").Mysoftware().Getall()) is uf.MySoftwareList
