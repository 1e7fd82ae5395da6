//! Registered base distributions as the SDK reads them: `GET /api/distributions`
//! (`Distributions.Getall`) and `GET /api/distributions/{id}` (`Distributions(Id=...).Get`), for any
//! signed-in user picking one for a container template. Registering and removing them is
//! `satchel admin distribution`'s.

use crate::containers::{ARCHS, DISTRIBUTIONS};
use crate::docs::{self, iso};
use crate::extract::{Auth, Fmt};
use crate::wire::{parse_id, ApiError, Doc};
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::model::Distribution;

type R = Result<Response, ApiError>;

pub fn routes() -> Table<AppState> {
    Table::new()
        .get(
            "/api/distributions",
            "The registered base distributions",
            list,
        )
        .get(
            "/api/distributions/{id}",
            "A registered base distribution",
            get,
        )
}

/// The schema's spelling of `s` among `known` (any case), else `s` as registered.
fn spelled(known: &[&str], s: &str) -> String {
    known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(s))
        .map(|k| k.to_string())
        .unwrap_or_else(|| s.to_string())
}

fn distribution_doc(d: &Distribution) -> docs::RegisteredDistribution {
    let size = d.config.size + d.layers.iter().map(|l| l.size).sum::<i64>();
    docs::RegisteredDistribution {
        created: iso(d.created),
        db_id: d.id,
        digest: d.config.digest.clone(),
        last_modified: iso(d.created),
        active: true,
        arch: spelled(ARCHS, &d.arch),
        description: format!(
            "base image: {} layer{}",
            d.layers.len(),
            if d.layers.len() == 1 { "" } else { "s" }
        ),
        name: spelled(DISTRIBUTIONS, &d.name),
        size,
        uri: format!("distributions/{}", d.id),
        version: d.version.clone(),
        visible: true,
    }
}

async fn list(State(st): State<AppState>, Auth(who): Auth, Fmt(f): Fmt) -> R {
    let ds = st.satchel.list_distributions(&who).await?;
    let items: Vec<_> = ds.iter().map(distribution_doc).collect();
    let doc = docs::Distributions {
        total: items.len() as i64,
        distributions: docs::DistributionItems {
            distribution: items,
        },
    };
    Ok(Doc::ok(f, "distributions", doc).into_response())
}

async fn get(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(id): Path<String>,
) -> R {
    let id = parse_id("distribution id", &id)?;
    let d = st.satchel.distribution(&who, id).await?;
    Ok(Doc::ok(f, "distribution", distribution_doc(&d)).into_response())
}
