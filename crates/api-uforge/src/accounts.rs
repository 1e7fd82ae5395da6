//! Cloud accounts: `/api/users/{uid}/accounts[/{caid}]` and the certificate files of an account,
//! `.../accounts/{caid}/certs[/{certid}[/{fileName}]]` (the SDK's `Users.Accounts` and
//! `Users.Accounts.Certs`). Documents carry the subtype as `xsi:type`; secrets answer masked unless
//! the owner asks `?reveal=true`.

use crate::extract::{write_doc, Auth, Fmt};
use crate::render;
use crate::wire::{parse_id, ApiError, Doc, Format};
use crate::{docs, AppState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use satchel_api_doc::Table;
use satchel_domain::accounts::{AccountInput, AccountKind, CertInput, Secret};

type R = Result<Response, ApiError>;

pub fn routes() -> Table<AppState> {
    let all = "/api/users/{uid}/accounts";
    let one = "/api/users/{uid}/accounts/{caid}";
    let certs = "/api/users/{uid}/accounts/{caid}/certs";
    let cert = "/api/users/{uid}/accounts/{caid}/certs/{certid}";
    let file = "/api/users/{uid}/accounts/{caid}/certs/{certid}/{fileName}";
    Table::new()
        .get(all, "The user's cloud accounts (secrets masked)", list)
        .post(
            all,
            "Create a cloud account (credAccount with its xsi:type subtype); secrets are sealed",
            create,
        )
        .get(
            one,
            "A cloud account; secrets masked unless the owner asks ?reveal=true",
            get,
        )
        .put(
            one,
            "Update a cloud account (a secret sent masked or left out keeps its value)",
            update,
        )
        .delete(one, "Delete a cloud account and its certificates", delete)
        .post(certs, "Add a certificate file to an account", add_cert)
        .get(
            cert,
            "Download a certificate file (the owner only)",
            download_cert,
        )
        .delete(cert, "Delete a certificate file", delete_cert)
        .post(file, "Upload a certificate file's content", upload_cert)
        .get(
            "/api/users/{uid}/targetplatforms",
            "The target platforms the user may hold cloud accounts for",
            target_platforms,
        )
}

async fn target_platforms(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let list = st.satchel.target_platforms(&who, &uid).await?;
    let doc = docs::TargetPlatforms {
        target_platforms: docs::TargetPlatformItems {
            target_platform: list
                .into_iter()
                .map(|(id, k)| docs::TargetPlatform {
                    db_id: id,
                    name: k.platform_name().into(),
                    kind: k.platform_type().into(),
                    access: true,
                    active: true,
                    uri: format!("users/{uid}/targetplatforms/{id}"),
                })
                .collect(),
        },
    };
    Ok(Doc::ok(f, "targetPlatforms", doc).into_response())
}

#[derive(serde::Deserialize, Default)]
struct ShowQuery {
    reveal: Option<String>,
}

fn reveal(q: &ShowQuery) -> Result<bool, ApiError> {
    match q.reveal.as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(_) => Err(ApiError::bad_request("reveal must be true or false")),
    }
}

fn decode_cert(c: docs::CertificateIn) -> Result<CertInput, ApiError> {
    let content = match c.content {
        None => None,
        Some(b64) => {
            let clean: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            // The error names the field, never its value.
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(clean.as_bytes())
                .map_err(|_| ApiError::bad_request("certificate content is not base64"))?;
            Some(Secret::new(bytes))
        }
    };
    Ok(CertInput {
        name: c.name,
        cert_type: c.kind,
        content,
    })
}

/// The request document as the domain's input; `kind` only when the document names one.
fn input(doc: docs::CredAccountIn) -> Result<AccountInput, ApiError> {
    let kind = doc
        .xsi_type
        .as_deref()
        .map(AccountKind::parse)
        .transpose()?;
    let values = docs::CredAccountIn::FIELDS
        .iter()
        .filter_map(|f| doc.get(f).map(|v| (f.to_string(), Secret::text(v.clone()))))
        .collect();
    let certs = doc
        .certificates
        .map(|c| c.certificate)
        .unwrap_or_default()
        .into_iter()
        .map(decode_cert)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AccountInput {
        kind,
        name: doc.name,
        platform: doc.target_platform.and_then(|t| t.name),
        values,
        certs,
    })
}

fn private(d: impl IntoResponse) -> Response {
    // Account documents may hold revealed secrets: no cache keeps them.
    let mut r = d.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn list(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let views = st.satchel.list_accounts(&who, &uid).await?;
    let items: Vec<_> = views
        .iter()
        .map(|v| render::account_doc(v, f == Format::Xml))
        .collect();
    let doc = docs::CredAccounts {
        total: items.len() as i64,
        cred_accounts: docs::CredAccountItems {
            cred_account: items,
        },
    };
    Ok(private(Doc::ok(f, "credAccounts", doc)))
}

async fn create(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> R {
    // Resolve the user first: a caller who may not act for `uid` never gets a body parsed.
    st.satchel.target(&who, &uid).await?;
    let doc: docs::CredAccountIn =
        write_doc(&st, &who, &headers, body, "credAccount", true).await?;
    let view = st.satchel.create_account(&who, &uid, input(doc)?).await?;
    Ok(private(
        Doc::ok(
            f,
            "credAccount",
            render::account_doc(&view, f == Format::Xml),
        )
        .with_status(StatusCode::CREATED),
    ))
}

async fn get(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, caid)): Path<(String, String)>,
    Query(q): Query<ShowQuery>,
) -> R {
    let caid = parse_id("credAccount id", &caid)?;
    let reveal = reveal(&q)?;
    let a = st.satchel.account(&who, &uid, caid).await?;
    let view = st.satchel.account_view(&a, reveal)?;
    Ok(private(Doc::ok(
        f,
        "credAccount",
        render::account_doc(&view, f == Format::Xml),
    )))
}

async fn update(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, caid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> R {
    let caid = parse_id("credAccount id", &caid)?;
    let a = st.satchel.account(&who, &uid, caid).await?;
    let doc: docs::CredAccountIn =
        write_doc(&st, &who, &headers, body, "credAccount", true).await?;
    let view = st.satchel.update_account(&a, input(doc)?).await?;
    Ok(private(Doc::ok(
        f,
        "credAccount",
        render::account_doc(&view, f == Format::Xml),
    )))
}

async fn delete(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, caid)): Path<(String, String)>,
) -> R {
    let caid = parse_id("credAccount id", &caid)?;
    let a = st.satchel.account(&who, &uid, caid).await?;
    st.satchel.delete_account(&a).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_cert(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, caid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> R {
    let caid = parse_id("credAccount id", &caid)?;
    let a = st.satchel.account(&who, &uid, caid).await?;
    let doc: docs::CertificateIn =
        write_doc(&st, &who, &headers, body, "certificate", true).await?;
    let cert = st.satchel.add_account_cert(&a, decode_cert(doc)?).await?;
    Ok(private(
        Doc::ok(
            f,
            "certificate",
            render::cert_doc(a.owner(), a.account().id, &cert, None),
        )
        .with_status(StatusCode::CREATED),
    ))
}

async fn upload_cert(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, caid, certid, file_name)): Path<(String, String, String, String)>,
    body: Body,
) -> R {
    let caid = parse_id("credAccount id", &caid)?;
    let certid = parse_id("certificate id", &certid)?;
    let a = st.satchel.account(&who, &uid, caid).await?;
    st.satchel.may_write(&who)?;
    let limit = satchel_domain::accounts::MAX_CERT_BYTES;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a certificate file is at most {limit} bytes"),
        )
    })?;
    let content = Secret::new(bytes.to_vec());
    drop(bytes);
    let cert = st
        .satchel
        .upload_account_cert(&a, certid, &file_name, content)
        .await?;
    Ok(private(Doc::ok(
        f,
        "certificate",
        render::cert_doc(a.owner(), a.account().id, &cert, None),
    )))
}

async fn download_cert(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, caid, certid)): Path<(String, String, String)>,
) -> R {
    let caid = parse_id("credAccount id", &caid)?;
    let certid = parse_id("certificate id", &certid)?;
    let a = st.satchel.account(&who, &uid, caid).await?;
    let (cert, content) = st.satchel.download_account_cert(&a, certid)?;
    let mut r = Response::new(Body::from(content.expose().to_vec()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        cert.name.replace(['"', '\\'], "_")
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn delete_cert(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, caid, certid)): Path<(String, String, String)>,
) -> R {
    let caid = parse_id("credAccount id", &caid)?;
    let certid = parse_id("certificate id", &certid)?;
    let a = st.satchel.account(&who, &uid, caid).await?;
    st.satchel.delete_account_cert(&a, certid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_body, render_doc};

    #[test]
    fn sdk_documents_parse_with_their_subtype() {
        let doc = r#"<?xml version="1.0" encoding="utf-8"?><ns1:credAccount xmlns:ns1="http://www.usharesoft.com/uforge" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ns1:CredAccountAws"><name>a</name><targetPlatform><name>Amazon</name></targetPlatform><certificates><certificate><content>UEVN</content><name>k.pem</name><type>x509</type></certificate></certificates><accessKeyId>AKIA</accessKeyId><accountNumber>1</accountNumber><secretAccessKeyId>s3cr3t</secretAccessKeyId></ns1:credAccount>"#;
        let d: docs::CredAccountIn =
            parse_body(&HeaderMap::new(), doc.as_bytes(), "credAccount").unwrap();
        let i = input(d).unwrap();
        assert_eq!(i.kind, Some(AccountKind::Aws));
        assert_eq!(i.platform.as_deref(), Some("Amazon"));
        assert_eq!(i.values["secretAccessKeyId"].expose(), b"s3cr3t");
        assert_eq!(i.certs.len(), 1);
        assert_eq!(i.certs[0].content.as_ref().unwrap().expose(), b"PEM");

        let bad = doc.replace("ns1:CredAccountAws", "ns1:CredAccountMars");
        let d: docs::CredAccountIn =
            parse_body(&HeaderMap::new(), bad.as_bytes(), "credAccount").unwrap();
        let e = input(d).expect_err("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);

        let json = r#"{"type":"CredAccountVSphere","name":"v","port":443,"password":"pw"}"#;
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let d: docs::CredAccountIn = parse_body(&h, json.as_bytes(), "credAccount").unwrap();
        let i = input(d).unwrap();
        assert_eq!(i.kind, Some(AccountKind::VSphere));
        assert_eq!(i.values["port"].expose(), b"443");

        // A secret of the wrong JSON type is taken as text, never echoed in a type error.
        for odd in ["12.75", "true"] {
            let json = format!(r#"{{"type":"CredAccountK5","name":"k","password":{odd}}}"#);
            let d: docs::CredAccountIn = parse_body(&h, json.as_bytes(), "credAccount").unwrap();
            assert_eq!(
                input(d).unwrap().values["password"].expose(),
                odd.as_bytes()
            );
        }
        let e = parse_body::<docs::CredAccountIn>(
            &h,
            br#"{"type":"CredAccountK5","password":{"nested":"s3cr3t-value"}}"#,
            "credAccount",
        )
        .err()
        .map(|e| e.message)
        .unwrap_or_default();
        assert!(!e.contains("s3cr3t-value"), "{e}");
    }

    #[test]
    fn documents_render_xsi_type_in_xml_and_type_in_json() {
        let doc = docs::CredAccountDoc {
            xml: true,
            xsi_type: "CredAccountOpenStack",
            created: "c".into(),
            db_id: 3,
            last_modified: "m".into(),
            name: "n".into(),
            uri: "users/a/accounts/3".into(),
            target_platform: docs::TargetPlatformRef {
                name: Some("OpenStack".into()),
                kind: Some("openstack".into()),
            },
            certificates: None,
            values: vec![("login", "me".into()), ("password", "********".into())],
        };
        let (b, _) = render_doc(Format::Xml, "credAccount", &doc).unwrap();
        let s = String::from_utf8(b).unwrap();
        assert!(
            s.contains(r#"xsi:type="ns0:CredAccountOpenStack""#)
                && s.contains(r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#),
            "{s}"
        );
        assert!(
            s.contains("<dbId>3</dbId>")
                && s.contains("<login>me</login><password>********</password>"),
            "{s}"
        );
        let json = docs::CredAccountDoc { xml: false, ..doc };
        let (b, _) = render_doc(Format::Json, "credAccount", &json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["type"], "CredAccountOpenStack");
        assert_eq!(v["targetPlatform"]["type"], "openstack");
    }
}
