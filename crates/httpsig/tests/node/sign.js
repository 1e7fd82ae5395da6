// Signs one request the way the real Triton client (smartdc@9.0.1 ->
// smartdc-auth 2.3.1 -> http-signature 1.4.0 -> sshpk 1.7.1) does, and prints
// what would go on the wire as one JSON line: {"date": ..., "authorization": ...}.
//
// Used only by satchel-httpsig's interop tests. Modules are resolved exactly
// as smartdc itself resolves them (createRequire from smartdc's package.json),
// so nested copies (http-signature under smartdc-auth) are the ones used.
//
// Usage: node sign.js <node_modules dir> <mode> <json options>
//   mode "cli":         smartdc-auth cliSigner (keys from $HOME/.ssh, or
//                       ssh-agent if $SSH_AUTH_SOCK is set) wrapped in
//                       requestSigner + writeDateHeader, as
//                       smartdc/lib/cloudapi.js _signRequest does.
//   mode "private":     smartdc-auth privateKeySigner (key file contents).
//   mode "signRequest": http-signature's signRequest on a fake request, for
//                       header lists other than "date".
//   mode "verify":      the reverse direction: checks an Authorization header
//                       made elsewhere with http-signature's parseRequest +
//                       verifySignature (what a node CloudAPI server does) and
//                       with smartdc-auth's own sshpk (1.7.1); prints
//                       {"httpSignature": bool, "sshpk": bool, "signingString": ..}.
// options: keyId (fingerprint), user, subuser, algorithm, keyFile,
//          headers (array), method, path, extraHeaders (object),
//          authorization, publicKey (OpenSSH line) for "verify"
'use strict';
var path = require('path');
var fs = require('fs');
var Module = require('module');

var nm = process.argv[2];
var mode = process.argv[3];
var opts = JSON.parse(process.argv[4] || '{}');

var smartdcRequire = Module.createRequire(path.join(nm, 'smartdc', 'package.json'));
var auth = smartdcRequire('smartdc-auth');
var authRequire = Module.createRequire(smartdcRequire.resolve('smartdc-auth'));
var httpSignature = authRequire('http-signature');

function done(err, out) {
    if (err) {
        process.stdout.write(JSON.stringify({error: String(err.message || err)}) + '\n');
        process.exit(2);
    }
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
}

function viaRequestSigner(sign) {
    var rs = auth.requestSigner({sign: sign});
    var date = rs.writeDateHeader();
    rs.sign(function (err, authz) {
        done(err, {date: date, authorization: authz});
    });
}

try {
    if (mode === 'cli') {
        var cliOpts = {keyId: opts.keyId, user: opts.user};
        if (opts.subuser) cliOpts.subuser = opts.subuser;
        if (opts.algorithm) cliOpts.algorithm = opts.algorithm;
        viaRequestSigner(auth.cliSigner(cliOpts));
    } else if (mode === 'private') {
        var pOpts = {key: fs.readFileSync(opts.keyFile, 'ascii'), user: opts.user};
        if (opts.subuser) pOpts.subuser = opts.subuser;
        if (opts.algorithm) pOpts.algorithm = opts.algorithm;
        viaRequestSigner(auth.privateKeySigner(pOpts));
    } else if (mode === 'signRequest') {
        var hdrs = {};
        Object.keys(opts.extraHeaders || {}).forEach(function (k) {
            hdrs[k.toLowerCase()] = opts.extraHeaders[k];
        });
        var req = {
            method: opts.method,
            path: opts.path,
            getHeader: function (h) { return hdrs[h.toLowerCase()]; },
            setHeader: function (h, v) { hdrs[h.toLowerCase()] = v; }
        };
        var sOpts = {
            keyId: opts.keyIdParam,
            key: fs.readFileSync(opts.keyFile, 'ascii'),
            headers: opts.headers
        };
        if (opts.algorithm) sOpts.algorithm = opts.algorithm;
        httpSignature.signRequest(req, sOpts);
        done(null, {date: hdrs.date, authorization: hdrs.authorization, headers: hdrs});
    } else if (mode === 'verify') {
        var vHeaders = {authorization: opts.authorization};
        Object.keys(opts.extraHeaders || {}).forEach(function (k) {
            vHeaders[k.toLowerCase()] = opts.extraHeaders[k];
        });
        var parsed = httpSignature.parseRequest({
            headers: vHeaders,
            method: opts.method,
            url: opts.path,
            httpVersion: '1.1'
        }, {clockSkew: 1e10});
        var okHttpSig = httpSignature.verifySignature(parsed, opts.publicKey);
        var sshpk = authRequire('sshpk');
        var key = sshpk.parseKey(opts.publicKey, 'ssh');
        var v = key.createVerify(parsed.algorithm.split('-')[1]);
        v.update(parsed.signingString);
        var okSshpk = v.verify(parsed.params.signature, 'base64');
        done(null, {httpSignature: okHttpSig, sshpk: okSshpk,
            signingString: parsed.signingString});
    } else {
        done(new Error('unknown mode ' + mode));
    }
} catch (e) {
    done(e);
}
