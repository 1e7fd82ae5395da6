//! UForge API key pairs: `/api/users/{uid}/apikeys[/{akid}]`. Reading a request signed with one is
//! the caller's extraction (`extract::signed_request`).

use crate::docs::{self, iso};
use crate::extract::{read_doc, Auth, Fmt};
use crate::wire::{parse_body_async, parse_id, ApiError, Doc};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::apikeys::ApiKey;

type R = Result<Response, ApiError>;

pub fn routes() -> Table<AppState> {
    let keys = "/api/users/{uid}/apikeys";
    let key = "/api/users/{uid}/apikeys/{akid}";
    Table::new()
        .get(keys, "The user's API key pairs (never their secrets)", list)
        .post(
            keys,
            "Create an API key pair (the only answer with its secret)",
            create,
        )
        .get(key, "An API key pair (without its secret)", get)
        .delete(key, "Delete (revoke) an API key pair", delete)
}

fn key_doc(uid: &str, k: &ApiKey, secret: Option<String>) -> docs::ApiKeyPair {
    docs::ApiKeyPair {
        created: iso(k.created),
        db_id: k.id,
        last_modified: k.last_used.map(iso),
        name: k.name.clone(),
        description: k.description.clone(),
        public_key: k.public_key.clone(),
        secret_key: secret,
        uri: format!("users/{uid}/apikeys/{}", k.id),
    }
}

async fn list(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let keys = st.satchel.list_api_keys(&who, &uid).await?;
    let items: Vec<_> = keys.iter().map(|k| key_doc(&uid, k, None)).collect();
    let doc = docs::ApiKeyPairs {
        total: items.len() as i64,
        api_key_pairs: docs::ApiKeyPairItems {
            api_key_pair: items,
        },
    };
    Ok(Doc::ok(f, "apiKeyPairs", doc).into_response())
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
    let input: docs::ApiKeyPairIn =
        parse_body_async(&headers, read_doc(body).await?, "apiKeyPair").await?;
    let created = st
        .satchel
        .create_api_key(&who, &uid, input.name, input.description)
        .await?;
    let doc = key_doc(&uid, &created.key, Some(created.secret.to_string()));
    // Never replayed: this route takes no Idempotency-Key, so the secret is stored nowhere else.
    Ok(Doc::ok(f, "apiKeyPair", doc)
        .with_status(StatusCode::CREATED)
        .header(header::CACHE_CONTROL, "no-store")
        .into_response())
}

async fn get(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, akid)): Path<(String, String)>,
) -> R {
    let akid = parse_id("apiKeyPair id", &akid)?;
    let k = st.satchel.api_key(&who, &uid, akid).await?;
    Ok(Doc::ok(f, "apiKeyPair", key_doc(&uid, &k, None)).into_response())
}

async fn delete(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, akid)): Path<(String, String)>,
) -> R {
    let akid = parse_id("apiKeyPair id", &akid)?;
    st.satchel.delete_api_key(&who, &uid, akid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
