//! Appliance templates (`appliance`): list, create, read, update, delete; the bundles they hold
//! (`mysoftware`), their OS profile (`osprofile`, a `linuxProfile`) and its package list (`pkgs`),
//! their boot scripts (`bootscripts`) and the scripts' bodies (`bin`). Paths and methods are the
//! SDK's (`Api._Users._Appliances`); the SDK has no call to attach or detach one bundle, so an
//! appliance document's `mySoftwareList` or `mySoftwareUris` sets the list (as UForge does), and
//! `PUT`/`DELETE .../mysoftware/{msid}` attach or detach one.

use crate::docs;
use crate::download::serve_blob;
use crate::extract::{
    body_stream, write_doc, ApplianceBundlePath, AppliancePath, Auth, BootScriptFilePath,
    BootScriptPath, Fmt, OsProfilePath,
};
use crate::idempotency::Idem;
use crate::render::{
    appliance_doc, boot_script_doc, bundle_doc, file_download, linux_profile_doc, packages_doc,
};
use crate::wire::{parse_id, ApiError, Doc, Format};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::appliance::{
    ApplianceInput, BootScriptInput, BootType, NewAppliance, NewBootScript, OsPackage,
    OwnedAppliance,
};
use satchel_domain::model::{DistributionRef, Id};

type R = Result<Response, ApiError>;

pub fn routes() -> Table<AppState> {
    let all = "/api/users/{uid}/appliances";
    let one = "/api/users/{uid}/appliances/{aid}";
    let os = format!("{one}/osprofile/{{osid}}");
    let bs = format!("{one}/bootscripts/{{bsid}}");
    Table::new()
        .get(all, "The user's appliance templates", list_appliances)
        .post(all, "Create an appliance template", create_appliance)
        .get(one, "An appliance template", get_appliance)
        .put(one, "Update an appliance template", update_appliance)
        .delete(
            one,
            "Delete an appliance template (never its bundles)",
            delete_appliance,
        )
        .get(
            &format!("{one}/mysoftware"),
            "The bundles an appliance holds",
            list_bundles,
        )
        .put(
            &format!("{one}/mysoftware/{{msid}}"),
            "Attach a bundle to an appliance",
            attach_bundle,
        )
        .delete(
            &format!("{one}/mysoftware/{{msid}}"),
            "Detach a bundle from an appliance",
            detach_bundle,
        )
        .get(
            &format!("{one}/osprofile"),
            "The appliance's OS profile",
            get_current_profile,
        )
        .post(
            &format!("{one}/osprofile"),
            "Set the appliance's OS profile",
            set_profile,
        )
        .get(&os, "The appliance's OS profile", get_profile)
        .delete(&os, "Delete the appliance's OS profile", delete_profile)
        .get(
            &format!("{os}/pkgs"),
            "The OS profile's packages",
            list_pkgs,
        )
        .put(
            &format!("{os}/pkgs"),
            "Replace the OS profile's packages",
            set_pkgs,
        )
        .get(
            &format!("{one}/bootscripts"),
            "The appliance's boot scripts",
            list_scripts,
        )
        .post(
            &format!("{one}/bootscripts"),
            "Create a boot script",
            create_script,
        )
        .get(&bs, "A boot script", get_script)
        .put(&bs, "Update a boot script", update_script)
        .delete(&bs, "Delete a boot script and its body", delete_script)
        .get(
            &format!("{bs}/bin"),
            "Download a boot script's body",
            download_script,
        )
        .get(
            &format!("{bs}/bin/{{file}}"),
            "Download a boot script's body by name",
            download_script_named,
        )
        .post(
            &format!("{bs}/bin/{{file}}"),
            "Upload a boot script's body",
            upload_script,
        )
}

// ------------------------------------------------------------------ documents in

/// The distribution a document names: a `distribution` element, else `distributionName`
/// (`CentOS 7`: a last word starting with a digit is the version) with `archName`.
fn distribution(d: &docs::ApplianceIn) -> Option<DistributionRef> {
    if let Some(x) = &d.distribution {
        return Some(DistributionRef {
            name: x.name.clone().unwrap_or_default(),
            version: x.version.clone().unwrap_or_default(),
            arch: x.arch.clone().or(d.arch_name.clone()).unwrap_or_default(),
        });
    }
    let full = d.distribution_name.as_deref()?.trim();
    let (name, version) = match full.rsplit_once(' ') {
        Some((n, v)) if v.starts_with(|c: char| c.is_ascii_digit()) => (n.trim(), v),
        _ => (full, ""),
    };
    Some(DistributionRef {
        name: name.to_string(),
        version: version.to_string(),
        arch: d.arch_name.clone().unwrap_or_default(),
    })
}

/// The bundle ids a document lists, if it lists any (`None`: leave the list as it is).
fn bundle_ids(d: &docs::ApplianceIn) -> Result<Option<Vec<Id>>, ApiError> {
    let from_uri = |u: &str| {
        let last = u
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        parse_id("mySoftware id", last)
    };
    if let Some(list) = &d.my_software_list {
        let ids = list
            .my_software
            .iter()
            .map(|m| match (m.db_id, m.uri.as_deref()) {
                (Some(id), _) => Ok(id),
                (None, Some(u)) => from_uri(u),
                (None, None) => Err(ApiError::bad_request(
                    "a mySoftware of mySoftwareList needs its dbId or uri",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(ids));
    }
    match &d.my_software_uris {
        Some(l) => Ok(Some(
            l.uri
                .iter()
                .map(|u| from_uri(u))
                .collect::<Result<_, _>>()?,
        )),
        None => Ok(None),
    }
}

fn boot_type(s: Option<&str>) -> Result<Option<BootType>, ApiError> {
    match s {
        None => Ok(None),
        Some(t) => BootType::parse(t).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "bootType must be firstboot or everyboot, not {t:?}"
            ))
        }),
    }
}

// ------------------------------------------------------------------ appliances

async fn list_appliances(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let all = st.satchel.list_appliances(&who, &uid).await?;
    let items: Vec<_> = all.iter().map(|p| appliance_doc(&uid, p)).collect();
    let doc = docs::Appliances {
        total: items.len() as i64,
        appliances: docs::ApplianceItems { appliance: items },
    };
    Ok(Doc::ok(f, "appliances", doc).into_response())
}

async fn create_appliance(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> R {
    let owner = st.satchel.owner(&who, &uid).await?;
    let d: docs::ApplianceIn = write_doc(&st, &who, &headers, body, "appliance", true).await?;
    let (Some(name), Some(version)) = (d.name.clone(), d.version.clone()) else {
        return Err(ApiError::bad_request(
            "an appliance needs its name and version",
        ));
    };
    let new = NewAppliance {
        name,
        version,
        description: d.description.clone(),
        distribution: distribution(&d),
        imported: false,
    };
    let bundles = bundle_ids(&d)?.unwrap_or_default();
    let profile = d
        .os_profile
        .as_ref()
        .map(|p| p.name.clone().unwrap_or_default());
    let profile = profile.map(|n| {
        if n.is_empty() {
            satchel_domain::appliance::DEFAULT_OS_PROFILE.to_string()
        } else {
            n
        }
    });
    let parts = st
        .satchel
        .create_appliance(&owner, new, bundles, profile)
        .await?;
    Ok(Doc::ok(f, "appliance", appliance_doc(&uid, &parts))
        .with_status(StatusCode::CREATED)
        .into_response())
}

async fn get_appliance(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: AppliancePath,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let parts = st.satchel.appliance_parts(&a).await?;
    Ok(Doc::ok(f, "appliance", appliance_doc(&p.uid, &parts)).into_response())
}

async fn update_appliance(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: AppliancePath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let d: docs::ApplianceIn = write_doc(&st, &who, &headers, body, "appliance", true).await?;
    let input = ApplianceInput {
        name: d.name.clone(),
        version: d.version.clone(),
        description: d.description.clone(),
        distribution: distribution(&d),
    };
    let parts = st
        .satchel
        .update_appliance(&a, input, bundle_ids(&d)?)
        .await?;
    Ok(Doc::ok(f, "appliance", appliance_doc(&p.uid, &parts)).into_response())
}

async fn delete_appliance(State(st): State<AppState>, Auth(who): Auth, p: AppliancePath) -> R {
    st.satchel.delete_appliance(&who, &p.uid, p.aid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------ bundles

async fn bundles_reply(st: &AppState, f: Format, uid: &str, a: &OwnedAppliance) -> R {
    let views = st.satchel.appliance_bundles(a).await?;
    let items: Vec<_> = views.iter().map(|v| bundle_doc(uid, v)).collect();
    let doc = docs::MySoftwareList {
        total: items.len() as i64,
        my_software_list: docs::MySoftwareItems { my_software: items },
    };
    Ok(Doc::ok(f, "mySoftwareList", doc).into_response())
}

async fn list_bundles(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: AppliancePath,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    bundles_reply(&st, f, &p.uid, &a).await
}

async fn attach_bundle(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: ApplianceBundlePath,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    st.satchel.attach_bundle(&a, p.msid).await?;
    bundles_reply(&st, f, &p.uid, &a).await
}

async fn detach_bundle(State(st): State<AppState>, Auth(who): Auth, p: ApplianceBundlePath) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    st.satchel.detach_bundle(&a, p.msid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------ OS profile and packages

async fn get_current_profile(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: AppliancePath,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let parts = st.satchel.appliance_parts(&a).await?;
    let profile = parts.os_profile.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("appliance {} has no osProfile", p.aid),
        )
    })?;
    let doc = linux_profile_doc(&p.uid, &parts.appliance, &profile);
    Ok(Doc::ok(f, "linuxProfile", doc).into_response())
}

async fn set_profile(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: AppliancePath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let d: docs::OsProfileIn = write_doc(&st, &who, &headers, body, "linuxProfile", false).await?;
    let profile = st.satchel.set_os_profile(&a, d.name).await?;
    Ok(Doc::ok(
        f,
        "linuxProfile",
        linux_profile_doc(&p.uid, a.appliance(), &profile),
    )
    .with_status(StatusCode::CREATED)
    .into_response())
}

async fn get_profile(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: OsProfilePath,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let profile = st.satchel.os_profile(&a, p.osid).await?;
    let doc = linux_profile_doc(&p.uid, a.appliance(), &profile);
    Ok(Doc::ok(f, "linuxProfile", doc).into_response())
}

async fn delete_profile(State(st): State<AppState>, Auth(who): Auth, p: OsProfilePath) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    st.satchel.delete_os_profile(&a, p.osid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_pkgs(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: OsProfilePath,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let (_, pkgs) = st.satchel.os_packages(&a, p.osid).await?;
    Ok(Doc::ok(f, "packages", packages_doc(&pkgs)).into_response())
}

async fn set_pkgs(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: OsProfilePath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let d: docs::PackagesIn = write_doc(&st, &who, &headers, body, "packages", true).await?;
    let pkgs = d
        .pkgs
        .map(|l| l.pkg)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            Ok(OsPackage {
                name: p
                    .name
                    .ok_or_else(|| ApiError::bad_request("a pkg needs its name"))?,
                version: p.version,
                arch: p.arch,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let (_, pkgs) = st.satchel.set_os_packages(&a, p.osid, pkgs).await?;
    Ok(Doc::ok(f, "packages", packages_doc(&pkgs)).into_response())
}

// ------------------------------------------------------------------ boot scripts

async fn list_scripts(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: AppliancePath,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let scripts = st.satchel.boot_scripts(&a).await?;
    let items: Vec<_> = scripts.iter().map(|s| boot_script_doc(&p.uid, s)).collect();
    let doc = docs::BootScripts {
        total: items.len() as i64,
        boot_scripts: docs::BootScriptItems { boot_script: items },
    };
    Ok(Doc::ok(f, "bootScripts", doc).into_response())
}

async fn create_script(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: AppliancePath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let d: docs::BootScriptIn = write_doc(&st, &who, &headers, body, "bootScript", true).await?;
    let name = d
        .name
        .ok_or_else(|| ApiError::bad_request("a bootScript needs its name"))?;
    let new = NewBootScript {
        name,
        order: d.boot_order.unwrap_or(0),
        kind: boot_type(d.boot_type.as_deref())?.unwrap_or(BootType::FirstBoot),
    };
    let s = st.satchel.create_boot_script(&a, new).await?;
    Ok(Doc::ok(f, "bootScript", boot_script_doc(&p.uid, &s))
        .with_status(StatusCode::CREATED)
        .into_response())
}

async fn get_script(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: BootScriptPath,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let s = st.satchel.boot_script(&a, p.bsid).await?;
    Ok(Doc::ok(f, "bootScript", boot_script_doc(&p.uid, &s)).into_response())
}

async fn update_script(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: BootScriptPath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let d: docs::BootScriptIn = write_doc(&st, &who, &headers, body, "bootScript", true).await?;
    let input = BootScriptInput {
        name: d.name,
        order: d.boot_order,
        kind: boot_type(d.boot_type.as_deref())?,
    };
    let s = st.satchel.update_boot_script(&a, p.bsid, input).await?;
    Ok(Doc::ok(f, "bootScript", boot_script_doc(&p.uid, &s)).into_response())
}

async fn delete_script(State(st): State<AppState>, Auth(who): Auth, p: BootScriptPath) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    st.satchel.delete_boot_script(&a, p.bsid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upload_script(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    p: BootScriptFilePath,
    body: Body,
) -> R {
    // Resolve before reading the body: a foreign or missing script answers 404 without consuming it.
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    st.satchel.boot_script(&a, p.bsid).await?;
    satchel_domain::names::validate_file_name(&p.file)?;
    idem.once_upload(&st, &who, body, |body| async {
        let s = st
            .satchel
            .upload_boot_script(&a, p.bsid, &p.file, body_stream(body))
            .await?;
        let sha256 = s
            .blob
            .as_ref()
            .map(|b| b.sha256.clone())
            .unwrap_or_default();
        Ok((
            Doc::ok(f, "bootScript", boot_script_doc(&p.uid, &s)).into_response(),
            sha256,
        ))
    })
    .await
}

async fn download_script(
    State(st): State<AppState>,
    Auth(who): Auth,
    p: BootScriptPath,
    headers: HeaderMap,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let (s, blob) = st.satchel.boot_script_body(&a, p.bsid, None).await?;
    serve_blob(&st.satchel.blobs, &headers, file_download(&s.name, &blob)).await
}

async fn download_script_named(
    State(st): State<AppState>,
    Auth(who): Auth,
    p: BootScriptFilePath,
    headers: HeaderMap,
) -> R {
    let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
    let (s, blob) = st
        .satchel
        .boot_script_body(&a, p.bsid, Some(&p.file))
        .await?;
    serve_blob(&st.satchel.blobs, &headers, file_download(&s.name, &blob)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, arch: Option<&str>) -> docs::ApplianceIn {
        docs::ApplianceIn {
            distribution_name: Some(name.into()),
            arch_name: arch.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn distribution_from_its_name() {
        let d = distribution(&named("CentOS 7", Some("x86_64"))).unwrap();
        assert_eq!(
            (d.name.as_str(), d.version.as_str(), d.arch.as_str()),
            ("CentOS", "7", "x86_64")
        );
        let d = distribution(&named("Red Hat Enterprise Linux 8.4", None)).unwrap();
        assert_eq!(
            (d.name.as_str(), d.version.as_str()),
            ("Red Hat Enterprise Linux", "8.4")
        );
        let d = distribution(&named("Debian", None)).unwrap();
        assert_eq!((d.name.as_str(), d.version.as_str()), ("Debian", ""));
        assert!(distribution(&docs::ApplianceIn::default()).is_none());
    }

    #[test]
    fn bundles_by_id_or_uri() {
        let d = docs::ApplianceIn {
            my_software_list: Some(docs::MySoftwareRefs {
                my_software: vec![
                    docs::MySoftwareRef {
                        db_id: Some(4),
                        uri: None,
                    },
                    docs::MySoftwareRef {
                        db_id: None,
                        uri: Some("users/a/mysoftware/9".into()),
                    },
                ],
            }),
            ..Default::default()
        };
        assert_eq!(bundle_ids(&d).unwrap(), Some(vec![4, 9]));
        let bad = docs::ApplianceIn {
            my_software_uris: Some(docs::UriList {
                uri: vec!["users/a/mysoftware/x".into()],
            }),
            ..Default::default()
        };
        assert!(bundle_ids(&bad).is_err());
        assert_eq!(bundle_ids(&docs::ApplianceIn::default()).unwrap(), None);
    }
}
