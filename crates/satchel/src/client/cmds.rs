//! The client flows: login, listing, and an export from start to a verified file.

use super::api::{Api, Downloaded, Export, Poll, Status};
use super::args::{BundlesCmd, Command, ExportCmd, ExportsCmd};
use super::creds::{self, Creds};
use super::out::Out;
use super::{Failure, Res, NOT_FOUND, SERVER, USAGE};
use serde_json::json;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub async fn run(cmd: Command) -> Res<()> {
    match cmd {
        Command::Login {
            url,
            user,
            password_stdin,
            out,
        } => login(url, user, password_stdin, &Out::new(&out)).await,
        Command::Logout { out } => {
            let out = Out::new(&out);
            let p = creds::path()?;
            let had = creds::remove()?;
            out.result(
                json!({"loggedOut": had, "credentials": p}),
                Some(if had {
                    format!("logged out (removed {})", p.display())
                } else {
                    "not logged in".to_string()
                }),
            );
            Ok(())
        }
        Command::Bundles(BundlesCmd::List { out }) => {
            let out = Out::new(&out);
            let api = api()?;
            for b in api.bundles().await? {
                out.result(
                    json!({"id": b.db_id, "name": b.name, "version": b.version, "size": b.size}),
                    Some(format!(
                        "{}\t{}\t{}\t{}",
                        b.db_id, b.name, b.version, b.size
                    )),
                );
            }
            Ok(())
        }
        Command::Export(ExportCmd::Bundle {
            bundle,
            format,
            output,
            out,
        }) => {
            let out = Out::new(&out);
            let api = api()?;
            let b = resolve_bundle(&api, &bundle).await?;
            let e = api.start_export(b.db_id, format.as_str()).await?;
            out.say(format!(
                "exporting {} {} (export {})",
                b.name, b.version, e.db_id
            ));
            follow_and_download(&api, &out, &e, output).await
        }
        Command::Export(ExportCmd::ContainerImage {
            bundle,
            template,
            name,
            output,
            out,
        }) => {
            let out = Out::new(&out);
            let api = api()?;
            let b = resolve_bundle(&api, &bundle).await?;
            let i = api.start_image(b.db_id, template, name.as_deref()).await?;
            out.say(format!(
                "generating image {} of {} {} (image {})",
                i.name, b.name, b.version, i.db_id
            ));
            let path = output.unwrap_or_else(|| {
                let ext = if i.file_extension.is_empty() {
                    "oci.tar"
                } else {
                    &i.file_extension
                };
                let base = satchel_domain::names::archive_file_name(&i.name);
                let base = base.strip_suffix(".tar.gz").unwrap_or(&base);
                PathBuf::from(format!("{base}.{ext}"))
            });
            let ticket = format!("/{}", i.uri);
            let d = follow(&api, &out, &ticket, i.db_id, i.status.clone(), path).await?;
            report(&out, "image", i.db_id, &d);
            Ok(())
        }
        Command::Export(ExportCmd::Image {
            uuid,
            manta_path,
            key,
            out,
        }) => {
            let out = Out::new(&out);
            let c = creds::current()?;
            let cloud = super::cloud::Cloud::new(&c, &super::cloud::key_file(key)?)?;
            let bar = out.spinner(&format!("exporting image {uuid}"));
            let doc = cloud
                .export_image(&uuid, &manta_path, |state| {
                    bar.set_message(format!("exporting image {uuid}: {state}"))
                })
                .await;
            bar.finish_and_clear();
            let doc = doc?;
            let (image, manifest) = (
                doc["image_path"].as_str().unwrap_or_default(),
                doc["manifest_path"].as_str().unwrap_or_default(),
            );
            out.result(
                json!({
                    "image": uuid,
                    "mantaUrl": doc["manta_url"],
                    "imagePath": image,
                    "manifestPath": manifest,
                }),
                Some(format!("{image}\n{manifest}")),
            );
            Ok(())
        }
        Command::Exports(c) => exports(c).await,
    }
}

fn api() -> Res<Api> {
    Api::new(&creds::current()?)
}

async fn login(url: String, user: String, password_stdin: bool, out: &Out) -> Res<()> {
    let url = creds::normalize_url(&url)?;
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::new(USAGE, format!("reading the password: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else if let Ok(p) = std::env::var("SATCHEL_PASSWORD") {
        p
    } else {
        rpassword::prompt_password(format!("Password for {user} at {url}: ")).map_err(|e| {
            Failure::new(
                USAGE,
                format!("reading the password (no terminal? use --password-stdin): {e}"),
            )
        })?
    };
    if password.is_empty() {
        return Err(Failure::new(USAGE, "empty password"));
    }
    let c = Creds {
        url: url.clone(),
        user: user.clone(),
        password,
    };
    Api::new(&c)?.check_login().await?;
    let p = creds::save(&c)?;
    out.result(
        json!({"url": url, "user": user, "credentials": p}),
        Some(format!(
            "logged in as {user} at {url} (saved in {})",
            p.display()
        )),
    );
    Ok(())
}

/// `NAME`, `NAME@VERSION` or a numeric id.
async fn resolve_bundle(api: &Api, spec: &str) -> Res<super::api::Bundle> {
    if let Ok(id) = spec.parse::<i64>() {
        return api.bundle(id).await;
    }
    let (name, version) = match spec.rsplit_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let matching: Vec<_> = api
        .bundles()
        .await?
        .into_iter()
        .filter(|b| b.name == name && version.is_none_or(|v| b.version == v))
        .collect();
    match matching.len() {
        0 => Err(Failure::new(NOT_FOUND, format!("no bundle {spec}"))),
        1 => Ok(matching.into_iter().next().expect("one")),
        _ => Err(Failure::new(
            USAGE,
            format!(
                "{spec} is ambiguous: versions {}; use NAME@VERSION or the id",
                matching
                    .iter()
                    .map(|b| format!("{} (id {})", b.version, b.db_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Finds one of the user's exports by id (the list gives its bundle).
async fn find_export(api: &Api, id: i64) -> Res<(i64, Export)> {
    let e = api
        .exports()
        .await?
        .into_iter()
        .find(|e| e.db_id == id)
        .ok_or_else(|| Failure::new(NOT_FOUND, format!("no export {id}")))?;
    let msid = e
        .bundle_id()
        .ok_or_else(|| Failure::new(SERVER, format!("export {id} has no bundle in its URI")))?;
    Ok((msid, e))
}

fn status_json(id: i64, msid: i64, s: &Status) -> serde_json::Value {
    json!({
        "id": id,
        "bundleId": msid,
        "state": state(s),
        "percentage": s.percentage,
        "bytesLoaded": s.bytes_loaded,
        "bytesTotal": s.bytes_total,
        "message": s.message,
        "errorMessage": s.error_message,
    })
}

fn state(s: &Status) -> &'static str {
    if s.error {
        "error"
    } else if s.cancelled {
        "cancelled"
    } else if s.complete {
        "complete"
    } else {
        "running"
    }
}

async fn exports(c: ExportsCmd) -> Res<()> {
    let api = api()?;
    match c {
        ExportsCmd::List { out } => {
            let out = Out::new(&out);
            for e in api.exports().await? {
                let msid = e.bundle_id().unwrap_or(0);
                let mut v = status_json(e.db_id, msid, &e.status);
                v["bundleName"] = json!(e.bundle_name);
                v["bundleVersion"] = json!(e.bundle_version);
                v["created"] = json!(e.created);
                v["digest"] = json!(e.digest);
                out.result(
                    v,
                    Some(format!(
                        "{}\t{} {}\t{}\t{}%\t{}",
                        e.db_id,
                        e.bundle_name,
                        e.bundle_version,
                        state(&e.status),
                        e.status.percentage,
                        e.created
                    )),
                );
            }
            Ok(())
        }
        ExportsCmd::Status { id, out } => {
            let out = Out::new(&out);
            let (msid, _) = find_export(&api, id).await?;
            let e = api.export(msid, id).await?;
            let s = &e.status;
            out.result(
                status_json(id, msid, s),
                Some(format!(
                    "export {id} of {} {}: {} {}%{}",
                    e.bundle_name,
                    e.bundle_version,
                    state(s),
                    s.percentage,
                    s.error_message
                        .as_ref()
                        .or(s.message.as_ref())
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )),
            );
            Ok(())
        }
        ExportsCmd::Download { id, output, out } => {
            let out = Out::new(&out);
            let (_, e) = find_export(&api, id).await?;
            follow_and_download(&api, &out, &e, output).await
        }
        ExportsCmd::Cancel { id, out } => {
            let out = Out::new(&out);
            let (msid, e) = find_export(&api, id).await?;
            if e.status.complete || e.status.error || e.status.cancelled {
                return Err(Failure::new(
                    USAGE,
                    format!(
                        "export {id} is {}, not running: use `satchel exports delete {id}`",
                        state(&e.status)
                    ),
                ));
            }
            api.delete(&api.export_path(msid, id)).await?;
            out.result(
                json!({"id": id, "cancelled": true}),
                Some(format!("cancelled export {id} (and removed it)")),
            );
            Ok(())
        }
        ExportsCmd::Delete { id, out } => {
            let out = Out::new(&out);
            let (msid, _) = find_export(&api, id).await?;
            api.delete(&api.export_path(msid, id)).await?;
            out.result(
                json!({"id": id, "deleted": true}),
                Some(format!("deleted export {id}")),
            );
            Ok(())
        }
    }
}

/// Follows an export to a verified file.
async fn follow_and_download(api: &Api, out: &Out, e: &Export, output: Option<PathBuf>) -> Res<()> {
    let path = output
        .unwrap_or_else(|| PathBuf::from(satchel_domain::names::archive_file_name(&e.bundle_name)));
    let ticket = format!("/{}", e.uri);
    let d = follow(api, out, &ticket, e.db_id, e.status.clone(), path).await?;
    report(out, "export", e.db_id, &d);
    Ok(())
}

/// Follows a ticket (an export or an image) until it is built (polls with `If-None-Match`,
/// backing off while nothing changes), then downloads and verifies its archive.
async fn follow(
    api: &Api,
    out: &Out,
    ticket: &str,
    eid: i64,
    status: Status,
    path: PathBuf,
) -> Res<Downloaded> {
    let mut s = status;
    if !(s.complete || s.error || s.cancelled) {
        let bar = out.build_bar("building");
        let mut etag: Option<String> = None;
        // The first polls come quickly (a small export is done in milliseconds, and an unchanged
        // poll is a cheap 304), then slow down by half each time: to twice a second while the
        // status moves (enough for a smooth bar), to every 2 s while it does not.
        let (first, moving, max) = (
            Duration::from_millis(10),
            Duration::from_millis(500),
            Duration::from_secs(2),
        );
        let mut wait = first;
        loop {
            match api.poll(ticket, etag.as_deref()).await? {
                Poll::Changed(new, tag) => {
                    etag = tag;
                    s = new;
                    if s.bytes_total > 0 {
                        bar.set_length(s.bytes_total as u64);
                        bar.set_position(s.bytes_loaded.max(0) as u64);
                    } else {
                        bar.set_length(100);
                        bar.set_position(s.percentage.clamp(0, 100) as u64);
                    }
                    wait = (wait * 3 / 2).min(moving);
                }
                Poll::Unchanged => {
                    wait = (wait * 3 / 2).min(max);
                }
                Poll::Busy(after) => {
                    // The server asks for patience: wait as long as it says (or back off).
                    wait = after.unwrap_or((wait * 2).min(max * 4));
                }
            }
            if s.complete || s.error || s.cancelled {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        if s.complete {
            bar.set_position(bar.length().unwrap_or(100));
            bar.finish();
        } else {
            bar.abandon();
        }
    }
    if s.error {
        return Err(Failure::new(
            SERVER,
            format!(
                "{} {eid} failed: {}",
                kind(ticket),
                s.error_message
                    .or(s.message)
                    .unwrap_or_else(|| "no message".into())
            ),
        ));
    }
    if s.cancelled {
        return Err(Failure::new(
            SERVER,
            format!("{} {eid} was cancelled", kind(ticket)),
        ));
    }
    api.download(ticket, &path, |total, done| out.download_bar(total, done))
        .await
}

/// `kind` names the id in the JSON result (`export`, `image`).
fn report(out: &Out, kind: &str, id: i64, d: &Downloaded) {
    if d.resumed_from > 0 {
        out.say(format!(
            "resumed at byte {} ({} bytes transferred now)",
            d.resumed_from, d.transferred
        ));
    }
    if d.verified {
        out.say(format!(
            "verified sha256 {} (matches the server's digest)",
            d.sha256
        ));
    } else {
        out.say(format!(
            "sha256 {} (not verified: the server sent no digest)",
            d.sha256
        ));
    }
    out.result(
        json!({
            kind: id,
            "file": d.path,
            "size": d.size,
            "transferred": d.transferred,
            "resumedFrom": d.resumed_from,
            "sha256": d.sha256,
            "verified": d.verified,
        }),
        Some(format!("{}\t{} bytes", display(&d.path), d.size)),
    );
}

fn kind(ticket: &str) -> &'static str {
    if ticket.contains("/images/") {
        "image"
    } else {
        "export"
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
