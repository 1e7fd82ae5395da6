"""Cloud accounts through the real SDK, as hammr 3.8.13 makes its calls
(hammr/commands/account/account.py and hammr/utils/account_utils.py):

* ``account create --file``: ``fill_<type>`` builds a ``CredAccount*`` binding from the file,
  ``assign_target_platform_account`` sets ``targetPlatform.name``, then
  ``Users(login).Accounts.Create(body=..., element_name="ns1:credAccount")`` (the SDK then sends
  ``xsi:type``). hammr first looks the platform up by name with ``Targetplatforms.Getall()``
  (``get_target_platform_object``) and picks ``fill_<type>`` by the platform's type:
  ``test_hammr_account_create_with_its_own_code`` runs those functions from hammr's sdist.
* ``account list``: ``Accounts.Getall().credAccounts.credAccount``, ordered by name, printing
  ``dbId, name, targetPlatform.name, created.strftime(...)``.
* ``account delete --id``: ``Accounts(id).Get()`` (printed the same way), then ``Accounts(id).Delete()``.

Each account comes back as the same binding subclass; secrets come back masked unless the owner
asks ``reveal=true``; another user's accounts answer like missing ones."""

import io

import pytest
import pyxb

from satchel_harness import uforge_error

AWS_SECRET = "sdk-aws-SECRET-3b9f"
OS_PASSWORD = "sdk-os-PASSWORD-77c1"
PEM = b"-----BEGIN RSA PRIVATE KEY-----\nsdk-cert-SECRET-0a0a\n-----END RSA PRIVATE KEY-----\n"
MASK = "********"


def fill_aws(uf, account):
    """hammr account_utils.fill_aws (its checks of mandatory keys dropped)."""
    a = uf.CredAccountAws()
    a.accountNumber = account["accountNumber"]
    a.name = account["name"]
    a.accessKeyId = account["accessKeyId"]
    a.secretAccessKeyId = account["secretAccessKeyId"]
    return a


def fill_openstack(uf, account):
    """hammr account_utils.fill_openstack."""
    a = uf.CredAccountOpenStack()
    a.name = account["name"]
    a.glanceUrl = account["glanceUrl"]
    a.keystoneUrl = account["keystoneUrl"]
    a.keystoneVersion = account["keystoneVersion"]
    a.login = account["login"]
    a.password = account["password"]
    return a


def assign_target_platform_account(uf, cred, name):
    """hammr account_utils.assign_target_platform_account."""
    tp = uf.targetPlatform()
    tp.name = name
    cred.targetPlatform = tp
    return cred


def hammr_create(api, uf, login, cred, platform):
    cred = assign_target_platform_account(uf, cred, platform)
    return api.Users(login).Accounts.Create(body=cred, element_name="ns1:credAccount")


def hammr_list(api, login):
    """What `hammr account list` reads and prints, as rows."""
    accounts = api.Users(login).Accounts.Getall()
    accounts = accounts.credAccounts.credAccount
    if accounts is None or len(accounts) == 0:
        return []
    rows = []
    for account in sorted(accounts, key=lambda a: a.name):
        rows.append([account.dbId, account.name, account.targetPlatform.name,
                     account.created.strftime("%Y-%m-%d %H:%M:%S")])
    return rows


def reveal(api, login, caid):
    """GET .../accounts/{caid}?reveal=true through the SDK's own transport (Get takes no query)."""
    acc = api.Users(login).Accounts(caid)
    return acc._REST("/users/" + login + "/accounts/" + str(caid), "GET", None, None, None,
                     reveal="true")


def err_of(uf, fn):
    with pytest.raises(Exception) as ei:
        fn()
    return uforge_error(ei, uf)


def test_hammr_account_create_list_info_delete(alice, bob, uf):
    aws = hammr_create(alice, uf, "alice", fill_aws(uf, {
        "name": "sdk aws", "accountNumber": "123456789012", "accessKeyId": "AKIASDK",
        "secretAccessKeyId": AWS_SECRET}), "Amazon AWS")
    assert type(aws) is uf.CredAccountAws, "POST accounts returned %r" % (aws,)
    assert aws.dbId and aws.name == "sdk aws" and aws.accessKeyId == "AKIASDK"
    assert aws.secretAccessKeyId == MASK, "secrets answer masked"
    assert aws.targetPlatform.name == "Amazon AWS" and aws.targetPlatform.type == "aws"
    assert aws.uri == "users/alice/accounts/%d" % aws.dbId

    os_ = hammr_create(alice, uf, "alice", fill_openstack(uf, {
        "name": "sdk openstack", "glanceUrl": "http://glance.example:9292",
        "keystoneUrl": "http://keystone.example:5000", "keystoneVersion": "v3",
        "login": "demo", "password": OS_PASSWORD}), "OpenStack")
    assert type(os_) is uf.CredAccountOpenStack, "POST accounts returned %r" % (os_,)
    assert os_.password == MASK and os_.login == "demo" and os_.keystoneVersion == "v3"

    # account list: every account parsed as its subclass, masked.
    got = alice.Users("alice").Accounts.Getall()
    assert type(got) is uf.CredAccounts
    by_id = {a.dbId: a for a in got.credAccounts.credAccount}
    assert type(by_id[aws.dbId]) is uf.CredAccountAws
    assert type(by_id[os_.dbId]) is uf.CredAccountOpenStack
    assert by_id[aws.dbId].secretAccessKeyId == MASK and by_id[os_.dbId].password == MASK
    rows = hammr_list(alice, "alice")
    assert [aws.dbId, "sdk aws", "Amazon AWS"] in [r[:3] for r in rows]
    assert [os_.dbId, "sdk openstack", "OpenStack"] in [r[:3] for r in rows]

    # account info / the delete's lookup: masked by default, revealed to the owner.
    one = alice.Users("alice").Accounts(os_.dbId).Get()
    assert type(one) is uf.CredAccountOpenStack and one.password == MASK
    shown = reveal(alice, "alice", os_.dbId)
    assert type(shown) is uf.CredAccountOpenStack and shown.password == OS_PASSWORD
    shown = reveal(alice, "alice", aws.dbId)
    assert type(shown) is uf.CredAccountAws and shown.secretAccessKeyId == AWS_SECRET

    # bob sees none of it.
    assert hammr_list(bob, "bob") == []
    assert err_of(uf, lambda: bob.Users("bob").Accounts(aws.dbId).Get()).statusCode == 404
    assert err_of(uf, lambda: bob.Users("alice").Accounts(aws.dbId).Get()).statusCode == 404
    assert err_of(uf, lambda: bob.Users("bob").Accounts(aws.dbId).Delete()).statusCode == 404

    # account delete --id --no-confirm
    for caid in (aws.dbId, os_.dbId):
        acc = alice.Users("alice").Accounts(caid).Get()
        assert acc is not None and acc.created is not None
        alice.Users("alice").Accounts(caid).Delete()
        assert err_of(uf, lambda: alice.Users("alice").Accounts(caid).Get()).statusCode == 404
    assert [r for r in hammr_list(alice, "alice") if r[0] in (aws.dbId, os_.dbId)] == []


def test_aws_account_with_a_certificate_file(alice, uf):
    cred = fill_aws(uf, {"name": "aws with key", "accountNumber": "1", "accessKeyId": "AKIAC",
                         "secretAccessKeyId": AWS_SECRET})
    # CredAccountCert: certificates travel inside the account (content is base64Binary).
    cert = uf.certificate()
    cert.name = "ec2.pem"
    cert.type = "ec2PrivateKey"
    # hammr names the anonymous simple type, or the SDK's xsi:type pass has no name to write.
    cert.type._ExpandedName = pyxb.namespace.ExpandedName(uf.Namespace, "type")
    cert.content_ = PEM  # pyxb renames `content` (a reserved name) to `content_`
    # As hammr's fill_google attaches certificates to a CredAccountCert.
    cred.certificates = pyxb.BIND()
    cred.certificates._ExpandedName = pyxb.namespace.ExpandedName(uf.Namespace, "Certificates")
    cred.certificates.append(cert)
    aws = hammr_create(alice, uf, "alice", cred, "Amazon AWS")
    assert type(aws) is uf.CredAccountAws
    certs = aws.certificates.certificate
    assert len(certs) == 1 and certs[0].name == "ec2.pem" and certs[0].type == "ec2PrivateKey"
    assert certs[0].content_ is None, "certificate content is not shown unmasked"
    assert certs[0].size == len(PEM)

    shown = reveal(alice, "alice", aws.dbId)
    assert shown.certificates.certificate[0].content_ == PEM
    # Users.Accounts.Certs.Download serves the file itself.
    data = alice.Users("alice").Accounts(aws.dbId).Certs(certs[0].dbId).Download()
    assert data == PEM

    # Certs.Create then Certs.Upload (a file body), as the SDK sends them.
    extra = uf.certificate()
    extra.name = "x509.pem"
    extra.type = "x509"
    made = alice.Users("alice").Accounts(aws.dbId).Certs.Create(body=extra)
    assert type(made) is uf.Certificate and made.dbId
    up = alice.Users("alice").Accounts(aws.dbId).Certs(made.dbId, "renamed.pem").Upload(
        body=io.BytesIO(b"second file"))
    assert type(up) is uf.Certificate and up.name == "renamed.pem" and up.size == 11
    assert alice.Users("alice").Accounts(aws.dbId).Certs(made.dbId).Download() == b"second file"
    alice.Users("alice").Accounts(aws.dbId).Certs(made.dbId).Delete()
    again = alice.Users("alice").Accounts(aws.dbId).Get()
    assert [c.name for c in again.certificates.certificate] == ["ec2.pem"]
    alice.Users("alice").Accounts(aws.dbId).Delete()


def test_unknown_account_type_is_a_uforge_error(server, alice, uf):
    import requests
    doc = ('<?xml version="1.0" encoding="utf-8"?><ns1:credAccount '
           'xmlns:ns1="http://www.usharesoft.com/uforge" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           'xsi:type="ns1:CredAccountMars"><name>m</name></ns1:credAccount>')
    r = requests.post(server.api_url + "/users/alice/accounts", data=doc,
                      auth=server.auth("alice"),
                      headers={"Content-Type": "application/xml", "Accept": "application/xml"})
    assert r.status_code == 400
    err = uf.CreateFromDocument(r.content)
    assert type(err) is uf.UForgeError and "unknown cloud account type" in \
        err.localizedErrorMsg.message


def hammr_account_utils(uf):
    """hammr's own account_utils functions, compiled from its sdist (with the bindings it star-imports
    and a printer that records errors)."""
    import os
    import re

    import hammr_code
    import sdk_loader

    names = ["aws", "fill_aws", "openstack", "fill_openstack", "get_target_platform_object",
             "assign_target_platform_account"]
    ns = dict(vars(uf))
    ns["printer"] = hammr_code.Printer()
    ns["pyxb"] = pyxb
    exec(hammr_code._functions(os.path.join("hammr", "utils", "account_utils.py"), names), ns)
    assert os.path.isdir(sdk_loader.hammr_root())
    ns["remove_special_chars"] = lambda t: re.sub(r"[^A-Za-z0-9]", "", t)
    return ns


def test_hammr_account_create_with_its_own_code(alice, uf):
    """`hammr account create --file` as account.py runs it: look the platform up by the file's type
    (its name), fill the binding with fill_<platform type>, name the platform, create."""
    au = hammr_account_utils(uf)
    # An unknown platform: hammr prints "Platform type unknown" and exits 2.
    assert au["get_target_platform_object"](alice, "alice", "Amiga Cloud") is None
    created = []
    for account_type, fields in [
        ("Amazon AWS", {"name": "hammr aws", "accountNumber": "210987654321",
                        "accessKeyId": "AKIAHAMMR", "secretAccessKeyId": AWS_SECRET}),
        ("OpenStack", {"name": "hammr os", "glanceUrl": "http://g.example:9292",
                       "keystoneUrl": "http://k.example:5000", "keystoneVersion": "v3",
                       "login": "demo", "password": OS_PASSWORD}),
    ]:
        tp = au["get_target_platform_object"](alice, "alice", account_type)
        assert tp is not None and tp.name == account_type, "no target platform %r" % account_type
        func = au.get("fill_" + au["remove_special_chars"](tp.type))
        assert func is not None, "hammr has no fill_%s" % tp.type
        cred = func(fields)
        assert cred is not None, au["printer"].errors()
        cred = au["assign_target_platform_account"](cred, tp.name)
        got = alice.Users("alice").Accounts.Create(body=cred, element_name="ns1:credAccount")
        assert got.name == fields["name"] and got.targetPlatform.name == account_type
        created.append(got)
    assert type(created[0]) is uf.CredAccountAws and created[0].secretAccessKeyId == MASK
    assert type(created[1]) is uf.CredAccountOpenStack and created[1].password == MASK
    for a in created:
        alice.Users("alice").Accounts(a.dbId).Delete()
