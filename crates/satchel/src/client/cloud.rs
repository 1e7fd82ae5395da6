//! The CloudAPI face over HTTP: requests signed with the user's SSH key (HTTP Signature over
//! `Date`, key id `/LOGIN/keys/MD5`), `{code, message}` errors, and ExportImage followed to the end.

use super::creds::Creds;
use super::{Failure, Res, AUTH, NETWORK, SERVER};
use reqwest::{Method, StatusCode};
use satchel_httpsig::PrivateKey;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Cloud {
    http: reqwest::Client,
    base: String,
    login: String,
    key: PrivateKey,
    key_id: String,
}

/// The key file to use: `--key`, `$SATCHEL_KEY`, else the usual `~/.ssh` names.
pub fn key_file(flag: Option<PathBuf>) -> Res<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("SATCHEL_KEY").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let p = Path::new(&home).join(".ssh").join(name);
            if p.exists() {
                return Ok(p);
            }
        }
    }
    Err(Failure::new(
        AUTH,
        "no SSH key: pass --key FILE or set SATCHEL_KEY (ssh-agent is not supported yet)",
    ))
}

fn failure_of(status: StatusCode, body: &[u8]) -> Failure {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let code = v["code"].as_str().unwrap_or_default();
    Failure::new(
        super::api::status_code(status),
        if code.is_empty() {
            format!("{msg} (HTTP {})", status.as_u16())
        } else {
            format!("{msg} ({code}, HTTP {})", status.as_u16())
        },
    )
}

impl Cloud {
    pub fn new(c: &Creds, key: &Path) -> Res<Cloud> {
        let text = std::fs::read_to_string(key)
            .map_err(|e| Failure::new(AUTH, format!("reading the key {}: {e}", key.display())))?;
        let key = PrivateKey::from_openssh(&text)
            .map_err(|e| Failure::new(AUTH, format!("the key {}: {e}", key.display())))?;
        let key_id = format!("/{}/keys/{}", c.user, key.public().md5_fingerprint());
        let http = super::api::http_client(&c.url)?;
        Ok(Cloud {
            http,
            base: c.url.clone(),
            login: c.user.clone(),
            key,
            key_id,
        })
    }

    async fn call(&self, m: Method, path_and_query: &str) -> Res<Value> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let auth = satchel_httpsig::sign_request(
            &self.key,
            &self.key_id,
            "",
            &[],
            m.as_str(),
            path_and_query,
            |h| (h == "date").then(|| date.clone()),
        )
        .map_err(|e| Failure::new(AUTH, format!("signing: {e}")))?;
        let url = format!("{}{path_and_query}", self.base);
        let r = self
            .http
            .request(m, &url)
            .header("date", &date)
            .header("authorization", auth)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| Failure::new(NETWORK, format!("cannot reach {url}: {e}")))?;
        let status = r.status();
        let body = r
            .bytes()
            .await
            .map_err(|e| Failure::new(NETWORK, format!("reading {url}: {e}")))?;
        if !status.is_success() {
            return Err(failure_of(status, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Failure::new(SERVER, format!("unexpected answer from {url}: {e}")))
    }

    /// Starts an asynchronous ExportImage and polls it until it is complete; the final document.
    pub async fn export_image(
        &self,
        uuid: &str,
        manta_path: &str,
        tick: impl Fn(&str),
    ) -> Res<Value> {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("action", "export")
            .append_pair("manta_path", manta_path)
            .append_pair("async", "true")
            .finish();
        let uuid_seg: String = url::form_urlencoded::byte_serialize(uuid.as_bytes()).collect();
        let started = self
            .call(
                Method::POST,
                &format!("/{}/images/{uuid_seg}?{q}", self.login),
            )
            .await?;
        let eid = started["id"]
            .as_str()
            .ok_or_else(|| Failure::new(SERVER, format!("no export id in {started}")))?
            .to_string();
        let path = format!("/{}/images/{uuid_seg}/exports/{eid}", self.login);
        let mut wait = Duration::from_millis(100);
        let mut doc = started;
        loop {
            let state = doc["state"].as_str().unwrap_or_default().to_string();
            tick(&state);
            match state.as_str() {
                "complete" => return Ok(doc),
                "failed" | "error" => {
                    return Err(Failure::new(
                        SERVER,
                        format!(
                            "the export of image {uuid} failed: {}",
                            doc["error"]["message"].as_str().unwrap_or("no message")
                        ),
                    ))
                }
                _ => {}
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 3 / 2).min(Duration::from_secs(2));
            doc = self.call(Method::GET, &path).await?;
        }
    }
}
