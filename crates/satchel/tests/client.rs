//! The client commands (`satchel login`, `bundles`, `export`, `exports`) through the real binary
//! against a test server on loopback: the full bundle flow with `--json`, resumed and verified
//! downloads (also across a server kill and restart), the exit codes, and the progress bar on a real
//! terminal (tmux).

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// One user's side: a config dir and a working dir of their own.
struct User {
    cfg: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

impl User {
    fn new() -> User {
        User {
            cfg: tempfile::tempdir().unwrap(),
            cwd: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, env: &[(&str, &str)], args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.cwd.path())
            .env("XDG_CONFIG_HOME", self.cfg.path())
            .env_remove("SATCHEL_URL")
            .env_remove("SATCHEL_USER")
            .env_remove("SATCHEL_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Runs `satchel ARGS` to the end (on a blocking thread: the server under test shares the runtime).
    async fn run(&self, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.cmd(env, args).spawn().unwrap();
        if let Some(s) = stdin {
            c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(c.stdin.take());
        tokio::task::spawn_blocking(move || c.wait_with_output().unwrap())
            .await
            .unwrap()
    }

    async fn login(&self, s: &Server, login: &str) {
        let o = self
            .run(
                &[],
                &["login", &s.base(), "--user", login, "--password-stdin"],
                Some(&format!("{login}-pw\n")),
            )
            .await;
        assert!(o.status.success(), "{}", text(&o.stderr));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.cwd.path().join(name)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

/// The one JSON object on stdout.
fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<_> = text(&o.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 1, "one result: {lines:?}");
    serde_json::from_str(&lines[0]).unwrap()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn part(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part", p.display()))
}

/// The archive of a finished export, as the server serves it.
async fn archive(a: &Client, msid: i64, eid: i64) -> Vec<u8> {
    let r = a
        .get(&format!(
            "/users/{}/mysoftware/{msid}/exports/{eid}/downloads",
            a.login
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.body
}

#[tokio::test]
async fn bundle_flow_with_json_output() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("My App", "1.0").await;
    a.add_file(msid, None, "data.bin", &noise(300_000, 3)).await;
    a.create_bundle("My App", "2.0").await;
    let u = User::new();

    // Wrong password: exit 4, nothing stored.
    let o = u
        .run(
            &[],
            &["login", &s.base(), "--user", "alice", "--password-stdin"],
            Some("nope\n"),
        )
        .await;
    assert_eq!(code(&o), 4, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("invalid login or password"),
        "{}",
        text(&o.stderr)
    );
    let creds = u.cfg.path().join("satchel/credentials.toml");
    assert!(!creds.exists());

    // The exit codes are documented on every level.
    for args in [
        &["--help"][..],
        &["export", "bundle", "--help"],
        &["exports", "download", "--help"],
    ] {
        let o = u.run(&[], args, None).await;
        assert!(o.status.success());
        assert!(
            text(&o.stdout).contains("6  verification failed"),
            "{}",
            text(&o.stdout)
        );
    }
    // Bad arguments: exit 2.
    let o = u.run(&[], &["export", "bundle"], None).await;
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));

    // Not logged in: exit 4.
    let o = u.run(&[], &["bundles", "list"], None).await;
    assert_eq!(code(&o), 4, "{}", text(&o.stderr));

    u.login(&s, "alice").await;
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let o = u.run(&[], &["bundles", "list", "--json"], None).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let list: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list
        .iter()
        .any(|b| b["name"] == "My App" && b["version"] == "1.0" && b["id"] == msid));

    // Two versions: the bare name is ambiguous (usage, 2); unknown names are not found (3).
    let o = u.run(&[], &["export", "bundle", "My App"], None).await;
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
    let o = u.run(&[], &["export", "bundle", "No Such App"], None).await;
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    let o = u.run(&[], &["export", "bundle", "999999"], None).await;
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("(HTTP 404)"),
        "{}",
        text(&o.stderr)
    );

    let o = u
        .run(
            &[],
            &["export", "bundle", "My App@1.0", "-o", "app.tgz", "--json"],
            None,
        )
        .await;
    let v = json(&o);
    let eid = v["export"].as_i64().unwrap();
    let served = archive(&a, msid, eid).await;
    let got = std::fs::read(u.path("app.tgz")).unwrap();
    assert_eq!(sha256(&got), sha256(&served));
    assert_eq!(v["sha256"], sha256(&served));
    assert_eq!(v["verified"], true);
    assert_eq!(v["size"], served.len() as u64);
    assert_eq!(v["resumedFrom"], 0);
    assert!(untar(&got).keys().any(|k| k.ends_with("data.bin")));
    assert!(!part(&u.path("app.tgz")).exists());
    assert!(
        text(&o.stderr).contains("verified sha256"),
        "{}",
        text(&o.stderr)
    );

    // By id, the JSON description, the server's file name.
    let id = msid.to_string();
    let o = u
        .run(
            &[],
            &["export", "bundle", &id, "--format", "json", "-q"],
            None,
        )
        .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).is_empty(), "quiet: {}", text(&o.stderr));
    assert!(u.path("My_App.tar.gz").exists());

    let o = u.run(&[], &["exports", "list", "--json"], None).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let exports: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exports.len(), 2, "{exports:?}");
    assert!(exports
        .iter()
        .all(|e| e["state"] == "complete" && e["bundleId"] == msid));

    let eids = eid.to_string();
    let v = json(
        &u.run(&[], &["exports", "status", &eids, "--json"], None)
            .await,
    );
    assert_eq!(v["state"], "complete");
    assert_eq!(v["percentage"], 100);

    // A finished export is not cancelled, it is deleted.
    let o = u.run(&[], &["exports", "cancel", &eids], None).await;
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
    let v = json(
        &u.run(&[], &["exports", "delete", &eids, "--json"], None)
            .await,
    );
    assert_eq!(v["deleted"], true);
    let o = u.run(&[], &["exports", "status", &eids], None).await;
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));

    // The environment wins over the stored login.
    let o = u
        .run(&[("SATCHEL_PASSWORD", "wrong")], &["bundles", "list"], None)
        .await;
    assert_eq!(code(&o), 4, "{}", text(&o.stderr));
    let o = u
        .run(
            &[("SATCHEL_USER", "bob"), ("SATCHEL_PASSWORD", "bob-pw")],
            &["bundles", "list", "--json"],
            None,
        )
        .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).is_empty(), "bob has no bundles");

    let o = u.run(&[], &["logout"], None).await;
    assert!(o.status.success());
    assert!(!creds.exists());
    let o = u.run(&[], &["bundles", "list"], None).await;
    assert_eq!(code(&o), 4);
}

#[tokio::test]
async fn downloads_resume_and_are_verified() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("big", "1.0").await;
    a.add_file(msid, None, "data.bin", &noise(2 << 20, 5)).await;
    let eid = a.export(msid, "yaml").await;
    a.wait_export(msid, eid, T).await;
    let served = archive(&a, msid, eid).await;
    let u = User::new();
    u.login(&s, "alice").await;
    let eids = eid.to_string();

    // A part file with the first bytes: only the rest is transferred (Range), and it verifies.
    let n = 1_000_000;
    std::fs::write(part(&u.path("a.tgz")), &served[..n]).unwrap();
    let o = u
        .run(
            &[],
            &["exports", "download", &eids, "-o", "a.tgz", "--json"],
            None,
        )
        .await;
    let v = json(&o);
    assert_eq!(v["resumedFrom"], n as u64);
    assert_eq!(v["transferred"], (served.len() - n) as u64);
    assert_eq!(v["verified"], true);
    assert_eq!(std::fs::read(u.path("a.tgz")).unwrap(), served);
    assert!(!part(&u.path("a.tgz")).exists());
    assert!(
        text(&o.stderr).contains("resumed at byte 1000000"),
        "{}",
        text(&o.stderr)
    );

    // A part downloaded under another ETag: If-Range makes the server send everything.
    std::fs::write(part(&u.path("b.tgz")), &served[..n]).unwrap();
    std::fs::write(
        format!("{}.etag", part(&u.path("b.tgz")).display()),
        "\"other\"",
    )
    .unwrap();
    let v = json(
        &u.run(
            &[],
            &["exports", "download", &eids, "-o", "b.tgz", "--json"],
            None,
        )
        .await,
    );
    assert_eq!(v["resumedFrom"], 0);
    assert_eq!(v["transferred"], served.len() as u64);
    assert_eq!(std::fs::read(u.path("b.tgz")).unwrap(), served);

    // A corrupted part: the digest does not match, the part is removed, exit 6.
    let mut bad = served[..n].to_vec();
    bad[n / 2] ^= 0xff;
    std::fs::write(part(&u.path("c.tgz")), &bad).unwrap();
    let o = u
        .run(&[], &["exports", "download", &eids, "-o", "c.tgz"], None)
        .await;
    assert_eq!(code(&o), 6, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("verification failed"),
        "{}",
        text(&o.stderr)
    );
    assert!(!part(&u.path("c.tgz")).exists());
    assert!(!u.path("c.tgz").exists());

    // The server down: exit 5.
    drop(s);
    let o = u.run(&[], &["exports", "status", &eids], None).await;
    assert_eq!(code(&o), 5, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("cannot reach"),
        "{}",
        text(&o.stderr)
    );
}

/// A TCP proxy to `port` that cuts every connection once `limit` response bytes have passed.
async fn cutting_proxy(port: u16, limit: u64) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    return;
                };
                let (mut dr, mut dw) = down.into_split();
                let (mut ur, mut uw) = up.into_split();
                let req = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut dr, &mut uw).await;
                });
                let mut buf = vec![0u8; 64 << 10];
                let mut sent = 0u64;
                while sent < limit {
                    let n = match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min((limit - sent) as usize),
                    };
                    if dw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n as u64;
                }
                req.abort();
            });
        }
    });
    p
}

#[tokio::test]
async fn interrupted_download_resumes_after_a_server_restart() {
    let mut s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("big", "1.0").await;
    a.add_file(msid, None, "data.bin", &noise(6 << 20, 11))
        .await;
    let u = User::new();
    u.login(&s, "alice").await;

    // The connection breaks 2 MB into the answer (the download): exit 5, the part is kept.
    let proxy = cutting_proxy(s.port, 2 << 20).await;
    let via_proxy = format!("http://127.0.0.1:{proxy}");
    let o = u
        .run(
            &[("SATCHEL_URL", &via_proxy)],
            &["export", "bundle", "big", "-o", "big.tgz", "--json"],
            None,
        )
        .await;
    assert_eq!(code(&o), 5, "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("re-run"), "{}", text(&o.stderr));
    let kept = std::fs::metadata(part(&u.path("big.tgz"))).unwrap().len();
    assert!(kept > 0 && kept < 2 << 20, "{kept}");
    assert!(!u.path("big.tgz").exists());

    // The server dies and comes back; the same command again finishes the file.
    s.kill9();
    s.spawn().await;
    let o = u
        .run(
            &[],
            &["export", "bundle", "big", "-o", "big.tgz", "--json"],
            None,
        )
        .await;
    let v = json(&o);
    assert_eq!(v["resumedFrom"], kept);
    assert_eq!(v["verified"], true);
    let got = std::fs::read(u.path("big.tgz")).unwrap();
    assert_eq!(v["sha256"], sha256(&got));
    assert_eq!(v["transferred"], got.len() as u64 - kept);
    assert!(untar(&got).values().any(|b| *b == noise(6 << 20, 11)));
    assert!(!part(&u.path("big.tgz")).exists());
    // The archive is the server's.
    let eid = v["export"].as_i64().unwrap();
    assert_eq!(sha256(&archive(&a, msid, eid).await), sha256(&got));
}

/// The interactive command on a real terminal: the bars are drawn, reach 100 %, are redrawn in
/// place (one line each), and the shell's next line starts clean.
#[tokio::test]
async fn progress_bars_on_a_terminal() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("big", "1.0").await;
    a.add_file(msid, None, "data.bin", &noise(16 << 20, 13))
        .await;
    let u = User::new();
    u.login(&s, "alice").await;

    let sock = format!("satchel-client-{}", std::process::id());
    let script = format!(
        "cd '{}' && XDG_CONFIG_HOME='{}' '{}' export bundle big -o big.tgz; echo EXIT=$?; sleep 120",
        u.cwd.path().display(),
        u.cfg.path().display(),
        bin().display()
    );
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&sock)
            .args(args)
            .output()
            .expect("tmux (installed by .ci/run)")
    };
    let o = tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "160",
        "-y",
        "30",
        &script,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let deadline = Instant::now() + T;
    let mut seen_running = false;
    let screen = loop {
        let o = tmux(&["capture-pane", "-p", "-t", "t"]);
        let screen = text(&o.stdout);
        if screen.contains("EXIT=") {
            break screen;
        }
        seen_running |= screen.contains("building") || screen.contains("downloading");
        assert!(Instant::now() < deadline, "did not finish: {screen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tmux(&["kill-server"]);
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    let bar = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(name))
            .collect()
    };
    let downloading = bar("downloading");
    assert_eq!(downloading.len(), 1, "redrawn in place: {screen}");
    assert!(downloading[0].contains("100%"), "{screen}");
    assert!(
        downloading[0].contains("[=============================="),
        "{screen}"
    );
    assert!(downloading[0].contains("MiB"), "{screen}");
    let building = bar("building");
    assert!(building.len() <= 1, "{screen}");
    assert!(building.iter().all(|l| l.contains("100%")), "{screen}");
    assert!(screen.contains("verified sha256"), "{screen}");
    assert!(
        lines.contains(&"EXIT=0"),
        "exit 0 on a clean line: {screen}"
    );
    assert!(
        seen_running,
        "a bar was on the screen while the command ran"
    );
}

#[tokio::test]
async fn container_image_flow() {
    let s = Server::start(&[]).await;
    let a = s.client("alice");
    let msid = a.create_bundle("web", "2.1").await;
    a.add_file(msid, None, "index.html", b"<h1>hi</h1>\n").await;
    let r = a
        .req(
            "POST",
            &format!("/users/alice/mysoftware/{msid}/templates"),
            Some(format!("<ns1:containerTemplate xmlns:ns1=\"{NS}\"/>").into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let tid = r.id().to_string();
    let u = User::new();
    u.login(&s, "alice").await;

    let o = u
        .run(
            &[],
            &[
                "export",
                "container-image",
                "web@2.1",
                &tid,
                "--name",
                "site",
                "-o",
                "site.tgz",
                "--json",
            ],
            None,
        )
        .await;
    let v = json(&o);
    assert_eq!(v["verified"], true);
    let itid = v["image"].as_i64().unwrap();
    let served = a
        .get(&format!(
            "/users/alice/mysoftware/{msid}/templates/{tid}/images/{itid}/downloads"
        ))
        .await;
    assert_eq!(served.status, 200, "{}", served.text());
    let got = std::fs::read(u.path("site.tgz")).unwrap();
    assert_eq!(sha256(&got), sha256(&served.body));
    let members = untar(&got);
    assert!(members.contains_key("oci-layout"), "{:?}", members.keys());
    assert!(text(&members["index.json"]).contains("site"));

    // The default file name; an unknown template is not found.
    let o = u
        .run(&[], &["export", "container-image", "web", &tid, "-q"], None)
        .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(u.path("web.oci.tar.gz").exists());
    let o = u
        .run(&[], &["export", "container-image", "web", "999999"], None)
        .await;
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
}

#[tokio::test]
async fn cloudapi_export_image_signed_with_the_users_key() {
    let s = Server::start(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let kp = common::cloud::keygen(keys.path(), "id_ed", "ed25519", None, false);
    let other = common::cloud::keygen(keys.path(), "id_other", "ed25519", None, false);
    common::cloud::register(&s, "alice", "laptop", &kp);
    let alice = common::cloud::Signed::new(&s, "alice", &kp);
    let data = noise(1 << 20, 21);
    let id = alice.make_image("foo", "1.0.0", "gzip", &data).await;
    assert_eq!(alice.mkdir("/alice/stor/images").await.status, 204);
    let u = User::new();
    u.login(&s, "alice").await;
    let key = kp.private.to_string_lossy().to_string();

    let v = json(
        &u.run(
            &[],
            &[
                "export",
                "image",
                &id,
                "--manta-path",
                "/alice/stor/images",
                "--key",
                &key,
                "--json",
            ],
            None,
        )
        .await,
    );
    assert_eq!(v["imagePath"], "/alice/stor/images/foo-1.0.0.zfs.gz");
    assert_eq!(
        v["manifestPath"],
        "/alice/stor/images/foo-1.0.0.imgmanifest"
    );
    let file = alice.get("/alice/stor/images/foo-1.0.0.zfs.gz").await;
    assert_eq!(file.status, 200);
    assert_eq!(sha256(&file.body), sha256(&data));

    // A key the server does not know: exit 4; an unknown image: exit 3 (the server's message).
    let other = other.private.to_string_lossy().to_string();
    let o = u
        .run(
            &[],
            &[
                "export",
                "image",
                &id,
                "--manta-path",
                "/alice/stor/x",
                "--key",
                &other,
            ],
            None,
        )
        .await;
    assert_eq!(code(&o), 4, "{}", text(&o.stderr));
    let o = u
        .run(
            &[("SATCHEL_KEY", &key)],
            &[
                "export",
                "image",
                "00000000-0000-0000-0000-000000000000",
                "--manta-path",
                "/alice/stor/x",
            ],
            None,
        )
        .await;
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("ResourceNotFound"),
        "{}",
        text(&o.stderr)
    );
}

/// `satchel login` on a terminal prompts for the password without echoing it.
#[tokio::test]
async fn login_prompts_without_echo() {
    let s = Server::start(&[]).await;
    let u = User::new();
    let sock = format!("satchel-login-{}", std::process::id());
    let script = format!(
        "XDG_CONFIG_HOME='{}' '{}' login '{}' --user alice; echo EXIT=$?; sleep 120",
        u.cfg.path().display(),
        bin().display(),
        s.base()
    );
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&sock)
            .args(args)
            .output()
            .expect("tmux (installed by .ci/run)")
    };
    let screen = |want: &str| {
        let deadline = Instant::now() + T;
        loop {
            let o = tmux(&["capture-pane", "-p", "-t", "t"]);
            let screen = text(&o.stdout);
            if screen.contains(want) {
                return screen;
            }
            assert!(Instant::now() < deadline, "no {want:?} on: {screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let o = tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "160",
        "-y",
        "10",
        &script,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    screen("Password for alice");
    tmux(&["send-keys", "-t", "t", "alice-pw", "Enter"]);
    let done = screen("EXIT=");
    tmux(&["kill-server"]);
    assert!(!done.contains("alice-pw"), "echoed: {done}");
    assert!(done.contains("EXIT=0"), "{done}");
    assert!(done.contains("logged in as alice"), "{done}");
    let o = u.run(&[], &["bundles", "list"], None).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
}
