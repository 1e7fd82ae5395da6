//! Cloud accounts (UForge `credAccount`): a user's credentials for a target platform, one subtype
//! per platform (the SDK's `CredAccount*` bindings). What an account names (URLs, logins, ids) is
//! kept as JSON; its secrets (passwords, secret keys, tokens, certificate files) are sealed with
//! XChaCha20-Poly1305 under the server's secrets key ([`SealKey`]), which never enters the
//! database. Each sealed value is bound (associated data) to a random id of its row and to the
//! field it fills, so a ciphertext copied onto another row or field does not open there, and
//! records the id of the key that sealed it, so a key rotation ([`rotate`]) can be resumed.
//!
//! Secrets live in [`Secret`] while in memory: zeroed on drop, and redacted by `Debug`/`Display`,
//! so no log line, error or panic message can carry one by accident.

use crate::apikeys::SealKey;
use crate::model::{now_millis, Id, Millis, Principal, SealedParam, User, ENT_SOFTWARE_UPLOAD};
use crate::service::Satchel;
use crate::{DomainError, Result};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Accounts one user may hold.
pub const MAX_ACCOUNTS_PER_USER: i64 = 200;
/// Certificate files one account may hold.
pub const MAX_CERTS_PER_ACCOUNT: usize = 8;
/// Largest certificate file (PEM keys and certificates are a few KiB).
pub const MAX_CERT_BYTES: usize = 64 * 1024;
/// Longest non-secret field or secret text.
const MAX_FIELD: usize = 4096;
/// The schema's certificate types.
pub const CERT_TYPES: &[&str] = &[
    "ec2KeyPairPrivateKey",
    "ec2PrivateKey",
    "googleCertificate",
    "uForgeCertificate",
    "x509",
];
/// What a masked secret reads as.
pub const MASK: &str = "********";

/// A secret in memory: zeroed when dropped, never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }
    pub fn text(s: String) -> Self {
        Secret(Zeroizing::new(s.into_bytes()))
    }
    /// The secret itself: call only where it must leave (the owner asked to see it).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// The secret as text (secrets sealed from text are UTF-8; anything else reads lossily).
    pub fn expose_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One field of a subtype, in the schema's order (the SDK's bindings parse a sequence in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub secret: bool,
    /// An `xs:int` in the schema (ports): refused unless it parses as one.
    pub int: bool,
}

const fn f(name: &'static str) -> Field {
    Field {
        name,
        secret: false,
        int: false,
    }
}
const fn s(name: &'static str) -> Field {
    Field {
        name,
        secret: true,
        int: false,
    }
}
const fn i(name: &'static str) -> Field {
    Field {
        name,
        secret: false,
        int: true,
    }
}

macro_rules! kinds {
    ($($kind:ident => $xsi:literal, $platform:literal, $label:literal, certs: $certs:literal, [$($field:expr),* $(,)?];)*) => {
        /// The account subtypes: the SDK's concrete `CredAccount*` bindings. (`CredAccountCert`
        /// is the abstract base of the two that carry certificate files, never an account itself.)
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AccountKind { $($kind),* }

        impl AccountKind {
            pub const ALL: &'static [AccountKind] = &[$(AccountKind::$kind),*];

            /// The schema type name, what `xsi:type` carries (without its prefix).
            pub fn xsi_type(self) -> &'static str {
                match self { $(AccountKind::$kind => $xsi),* }
            }

            /// `targetPlatform/type` in the schema's enumeration.
            pub fn platform_type(self) -> &'static str {
                match self { $(AccountKind::$kind => $platform),* }
            }

            /// The platform's display name, the default `targetPlatform/name`.
            pub fn platform_name(self) -> &'static str {
                match self { $(AccountKind::$kind => $label),* }
            }

            /// Whether the subtype extends `CredAccountCert` (holds certificate files).
            pub fn has_certificates(self) -> bool {
                match self { $(AccountKind::$kind => $certs),* }
            }

            /// The subtype's own fields, in schema order.
            pub fn fields(self) -> &'static [Field] {
                match self { $(AccountKind::$kind => { const F: &[Field] = &[$($field),*]; F }),* }
            }
        }
    };
}

// Secret: what lets someone act as the account holder (passwords, secret keys, application keys,
// tokens). Not secret: identifiers and endpoints (account numbers, access key ids, tenant ids).
kinds! {
    Aws => "CredAccountAws", "aws", "Amazon AWS", certs: true,
        [f("accessKeyId"), f("accountNumber"), f("keyPairName"), s("secretAccessKeyId")];
    Azure => "CredAccountAzure", "azure", "Microsoft Azure", certs: false,
        [f("tenantId"), f("subscriptionId"), f("applicationId"), s("applicationKey"), f("endpointUrl")];
    Google => "CredAccountGoogle", "google", "Google Compute Engine", certs: true, [];
    OpenStack => "CredAccountOpenStack", "openstack", "OpenStack", certs: false,
        [f("glanceUrl"), f("keystoneUrl"), f("login"), s("password"), f("keystoneVersion")];
    VSphere => "CredAccountVSphere", "vsphere", "VMware vCenter", certs: false,
        [f("hostname"), f("login"), s("password"), i("port"), f("proxyHost"), i("proxyPort")];
    Docker => "CredAccountDocker", "docker", "Docker", certs: false,
        [f("endpointUrl"), f("login"), s("password")];
    CloudStack => "CredAccountCloudStack", "cloudstack", "CloudStack", certs: false,
        [f("endpointUrl"), f("publicApiKey"), s("secretApiKey")];
    Outscale => "CredAccountOutscale", "outscale", "Outscale", certs: false,
        [f("accessKeyId"), f("accountNumber"), f("keyPairName"), s("secretAccessKeyId")];
    Oracle => "CredAccountOracle", "oracle", "Oracle Cloud", certs: false,
        [f("login"), s("password"), f("domainName")];
    VCloudDirector => "CredAccountVCloudDirector", "vclouddirector", "VMware vCloud Director", certs: false,
        [f("hostname"), f("organizationName"), f("login"), s("password"), i("port"), f("proxyHost"), i("proxyPort")];
    K5 => "CredAccountK5", "k5", "Fujitsu K5", certs: false, [f("login"), s("password")];
    OpenShift => "CredAccountOpenShift", "openshift", "OpenShift", certs: false,
        [f("registryUrl"), s("token")];
    SuseCloud => "CredAccountSuseCloud", "openstack", "SUSE Cloud", certs: false,
        [f("glanceUrl"), f("keystoneUrl"), f("login"), s("password")];
    Cloudwatt => "CredAccountCloudwatt", "openstack", "Cloudwatt", certs: false,
        [f("glanceUrl"), f("keystoneUrl"), f("login"), s("password")];
}

impl AccountKind {
    /// The subtype an `xsi:type` names (`ns1:CredAccountAws` or `CredAccountAws`). The abstract
    /// `CredAccount` and `CredAccountCert`, and anything else, are refused.
    pub fn parse(xsi_type: &str) -> Result<AccountKind> {
        let local = xsi_type.rsplit(':').next().unwrap_or(xsi_type).trim();
        AccountKind::ALL
            .iter()
            .copied()
            .find(|k| k.xsi_type() == local)
            .ok_or_else(|| {
                DomainError::Invalid(format!(
                    "unknown cloud account type {:?}: one of {} is expected",
                    local.chars().take(64).collect::<String>(),
                    AccountKind::ALL
                        .iter()
                        .map(|k| k.xsi_type())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    pub fn field(self, name: &str) -> Option<Field> {
        self.fields().iter().copied().find(|f| f.name == name)
    }
}

/// A sealed value as stored: the row's random binding id, the id of the key that sealed it, and
/// version + nonce + ciphertext + tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub uid: String,
    pub key_id: String,
    pub blob: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("uid", &self.uid)
            .field("key_id", &self.key_id)
            .field("len", &self.blob.len())
            .finish()
    }
}

/// What a sealed value is bound to: the kind of row, its random id and the field.
fn aad(what: &str, uid: &str, field: &str) -> Vec<u8> {
    format!("satchel-secret-v1\0{what}\0{uid}\0{field}").into_bytes()
}

const ACCOUNT_FIELD: (&str, &str) = ("account", "secrets");
const CERT_FIELD: (&str, &str) = ("account-cert", "content");
const PASSPHRASE_FIELD: (&str, &str) = ("takeout", "passphrase");
const NOTIFY_FIELD: (&str, &str) = ("notify-secret", "secret");

/// Seals a takeout's passphrase for its ticket's parameters (bound to a fresh id, so it opens
/// nowhere else).
pub(crate) fn seal_passphrase(key: &SealKey, passphrase: &Secret) -> Result<SealedParam> {
    let s = seal_with(key, PASSPHRASE_FIELD, new_uid(), passphrase.expose())?;
    Ok(SealedParam {
        uid: s.uid,
        key_id: s.key_id,
        blob: hex::encode(&s.blob),
    })
}

pub(crate) fn open_passphrase(key: &SealKey, p: &SealedParam) -> Result<Secret> {
    let sealed = Sealed {
        uid: p.uid.clone(),
        key_id: p.key_id.clone(),
        blob: hex::decode(&p.blob)
            .map_err(|_| DomainError::Internal("a sealed passphrase is not hex".into()))?,
    };
    open_with(key, PASSPHRASE_FIELD, &sealed)
}

/// An account's secret fields, opened: field name to value.
fn open_secrets(key: &SealKey, a: &Account) -> Result<BTreeMap<String, String>> {
    let opened = open_with(key, ACCOUNT_FIELD, &a.secrets)?;
    serde_json::from_slice(opened.expose())
        .map_err(|_| DomainError::Internal("a sealed account holds no JSON object".into()))
}

/// Every account of a user with its secrets and certificate files opened, as a takeout carries
/// them (`satchel-accounts/1`). The finished JSON is held in zeroizing memory; the short-lived
/// per-field copies on the way are plain `String`s (serde has no zeroizing strings).
pub(crate) fn accounts_document(
    key: &SealKey,
    login: &str,
    accounts: &[Account],
) -> Result<Zeroizing<Vec<u8>>> {
    use base64::Engine as _;
    #[derive(serde::Serialize)]
    struct CertOut<'a> {
        id: Id,
        name: &'a str,
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        cert_type: Option<&'a str>,
        size: i64,
        content_base64: String,
    }
    #[derive(serde::Serialize)]
    struct AccountOut<'a> {
        id: Id,
        name: &'a str,
        #[serde(rename = "type")]
        xsi_type: &'static str,
        #[serde(rename = "targetPlatform")]
        platform: &'a str,
        created: String,
        #[serde(rename = "lastModified")]
        last_modified: String,
        /// Every field of the subtype that has a value, secrets included.
        fields: BTreeMap<&'a str, String>,
        certificates: Vec<CertOut<'a>>,
    }
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        format: &'static str,
        user: &'a str,
        accounts: Vec<AccountOut<'a>>,
    }
    let iso = |ms: Millis| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    let mut out = Vec::with_capacity(accounts.len());
    for a in accounts {
        let secrets = open_secrets(key, a)?;
        let mut fields = BTreeMap::new();
        for f in a.kind.fields() {
            let v = if f.secret {
                secrets.get(f.name).cloned()
            } else {
                a.fields.get(f.name).cloned()
            };
            if let Some(v) = v {
                fields.insert(f.name, v);
            }
        }
        let mut certificates = Vec::with_capacity(a.certs.len());
        for c in &a.certs {
            let content = open_with(key, CERT_FIELD, &c.content)?;
            certificates.push(CertOut {
                id: c.id,
                name: &c.name,
                cert_type: c.cert_type.as_deref(),
                size: c.size,
                content_base64: base64::engine::general_purpose::STANDARD.encode(content.expose()),
            });
        }
        out.push(AccountOut {
            id: a.id,
            name: &a.name,
            xsi_type: a.kind.xsi_type(),
            platform: &a.platform,
            created: iso(a.created),
            last_modified: iso(a.modified),
            fields,
            certificates,
        });
    }
    let doc = Doc {
        format: "satchel-accounts/1",
        user: login,
        accounts: out,
    };
    let mut buf = Zeroizing::new(Vec::new());
    serde_json::to_writer_pretty(&mut *buf, &doc)
        .map_err(|e| DomainError::Internal(e.to_string().into()))?;
    Ok(buf)
}

/// Seals `msg` as a value of `kind` bound to the row's `uid` (tests, tools; the operations here
/// seal through it too).
pub fn seal_value(key: &SealKey, kind: SealedKind, uid: String, msg: &[u8]) -> Result<Sealed> {
    seal_with(key, kind.field(), uid, msg)
}

/// Opens what [`seal_value`] sealed; an error (naming the key ids, never the value) if it does not.
pub fn open_value(key: &SealKey, kind: SealedKind, sealed: &Sealed) -> Result<Secret> {
    open_with(key, kind.field(), sealed)
}

/// A fresh random binding id for a sealed row.
pub fn new_uid() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn seal_with(
    key: &SealKey,
    (what, field): (&str, &str),
    uid: String,
    msg: &[u8],
) -> Result<Sealed> {
    Ok(Sealed {
        blob: key.seal_bound(&aad(what, &uid, field), msg)?,
        key_id: key.key_id(),
        uid,
    })
}

fn open_with(key: &SealKey, (what, field): (&str, &str), sealed: &Sealed) -> Result<Secret> {
    key.open_bound(&aad(what, &sealed.uid, field), &sealed.blob)
        .map(Secret)
        .ok_or_else(|| {
            DomainError::Internal(format!(
                "a sealed {what} secret does not open with the server's secrets key (sealed by key {}, \
                 this server has {}; do all instances share the same --secrets-key-file?)",
                sealed.key_id,
                key.key_id()
            )
            .into())
        })
}

/// A certificate file of an account (`CredAccountCert` subtypes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCert {
    pub id: Id,
    pub account_id: Id,
    pub name: String,
    /// The schema's certificate type (`x509`, `ec2PrivateKey`, ...), as given.
    pub cert_type: Option<String>,
    pub size: i64,
    pub content: Sealed,
    pub created: Millis,
    pub modified: Millis,
}

/// One stored account. `fields` holds the non-secret fields; `secrets` the sealed JSON object of
/// the secret ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Id,
    pub owner_id: Id,
    pub name: String,
    pub kind: AccountKind,
    /// `targetPlatform/name` as the client gave it (hammr names the platform by it).
    pub platform: String,
    pub fields: BTreeMap<String, String>,
    pub secrets: Sealed,
    pub created: Millis,
    pub modified: Millis,
    pub certs: Vec<AccountCert>,
}

#[derive(Debug, Clone)]
pub struct NewCert {
    pub name: String,
    pub cert_type: Option<String>,
    pub size: i64,
    pub content: Sealed,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub owner_id: Id,
    pub name: String,
    pub kind: AccountKind,
    pub platform: String,
    pub fields: BTreeMap<String, String>,
    pub secrets: Sealed,
    pub created: Millis,
    pub certs: Vec<NewCert>,
}

/// What an update writes: the whole account but its id, owner, kind and certificates.
#[derive(Debug, Clone)]
pub struct AccountUpdate {
    pub name: String,
    pub platform: String,
    pub fields: BTreeMap<String, String>,
    pub secrets: Sealed,
    pub modified: Millis,
}

/// A certificate file in a request.
#[derive(Debug, Clone, Default)]
pub struct CertInput {
    pub name: Option<String>,
    pub cert_type: Option<String>,
    pub content: Option<Secret>,
}

/// An account as a request document gives it: every field by its schema name. Which are secret
/// is decided here, from the subtype.
#[derive(Debug, Clone, Default)]
pub struct AccountInput {
    pub kind: Option<AccountKind>,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub values: BTreeMap<String, Secret>,
    pub certs: Vec<CertInput>,
}

/// A certificate as shown: its content only when revealed.
#[derive(Debug, Clone)]
pub struct CertView {
    pub cert: AccountCert,
    pub content: Option<Secret>,
}

/// An account as shown: every field of its subtype that has a value, secrets masked unless
/// revealed.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub account: Account,
    pub owner_login: String,
    /// (field, value) in schema order; a masked secret reads [`MASK`].
    pub values: Vec<(Field, Secret)>,
    pub certs: Vec<CertView>,
    pub revealed: bool,
}

/// An account of the user a URL names, resolved by [`Satchel::account`]: the only way to an
/// operation on one.
#[derive(Debug, Clone)]
pub struct OwnedAccount {
    who: Principal,
    owner: User,
    account: Account,
}

impl OwnedAccount {
    pub fn account(&self) -> &Account {
        &self.account
    }
    pub fn owner(&self) -> &User {
        &self.owner
    }
}

fn check_text(what: &str, v: &str, max: usize) -> Result<()> {
    if v.len() > max {
        return Err(DomainError::Invalid(format!(
            "{what} is longer than {max} bytes"
        )));
    }
    if v.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(DomainError::Invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

/// The non-secret fields of an account, by schema name.
type PlainFields = BTreeMap<String, String>;

/// Splits `values` into the subtype's non-secret fields and its secrets (JSON, to be sealed),
/// checking each. Fields the subtype does not have are ignored, as the SDK's bindings would.
fn split_values(
    kind: AccountKind,
    values: &BTreeMap<String, Secret>,
) -> Result<(PlainFields, Zeroizing<Vec<u8>>)> {
    let mut plain = BTreeMap::new();
    let mut secrets: BTreeMap<&str, Zeroizing<String>> = BTreeMap::new();
    for field in kind.fields() {
        let Some(v) = values.get(field.name) else {
            continue;
        };
        let text = std::str::from_utf8(v.expose())
            .map_err(|_| DomainError::Invalid(format!("{} is not UTF-8", field.name)))?;
        // Never echo a secret's value in an error: only its field's name.
        check_text(field.name, text, MAX_FIELD)?;
        if field.int && text.trim().parse::<i32>().is_err() {
            return Err(DomainError::Invalid(format!(
                "{} must be an integer",
                field.name
            )));
        }
        if field.secret {
            secrets.insert(field.name, Zeroizing::new(text.to_string()));
        } else {
            plain.insert(field.name.to_string(), text.trim().to_string());
        }
    }
    let as_str: BTreeMap<&str, &str> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let json =
        serde_json::to_vec(&as_str).map_err(|e| DomainError::Internal(e.to_string().into()))?;
    Ok((plain, Zeroizing::new(json)))
}

fn check_name(name: Option<&str>) -> Result<String> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| DomainError::Invalid("credAccount name is required".into()))?;
    check_text("name", name, 255)?;
    Ok(name.to_string())
}

fn check_cert(c: &CertInput) -> Result<(String, Option<String>)> {
    let name = c
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| DomainError::Invalid("a certificate needs a name".into()))?;
    crate::names::validate_label("certificate name", name)?;
    if let Some(t) = &c.cert_type {
        if !CERT_TYPES.contains(&t.as_str()) {
            return Err(DomainError::Invalid(format!(
                "certificate type must be one of {}",
                CERT_TYPES.join(", ")
            )));
        }
    }
    if c.content.as_ref().is_some_and(|s| s.len() > MAX_CERT_BYTES) {
        return Err(DomainError::TooLarge(format!(
            "a certificate file is at most {MAX_CERT_BYTES} bytes"
        )));
    }
    Ok((name.to_string(), c.cert_type.clone()))
}

impl Satchel {
    /// Resolves an account of the user the URL names; another user's answers like a missing one.
    pub async fn account(&self, who: &Principal, uid: &str, caid: Id) -> Result<OwnedAccount> {
        let owner = self.target(who, uid).await?;
        let account = self
            .store
            .get_account(owner.id, caid)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("credAccount {caid}")))?;
        Ok(OwnedAccount {
            who: who.clone(),
            owner,
            account,
        })
    }

    fn seal_cert(&self, c: &CertInput) -> Result<NewCert> {
        let (name, cert_type) = check_cert(c)?;
        let empty = Secret::new(Vec::new());
        let content = c.content.as_ref().unwrap_or(&empty);
        Ok(NewCert {
            name,
            cert_type,
            size: content.len() as i64,
            content: seal_with(&self.secrets, CERT_FIELD, new_uid(), content.expose())?,
        })
    }

    pub async fn create_account(
        &self,
        who: &Principal,
        uid: &str,
        input: AccountInput,
    ) -> Result<AccountView> {
        let owner = self.target(who, uid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let kind = input
            .kind
            .ok_or_else(|| DomainError::Invalid("credAccount needs an xsi:type".into()))?;
        let name = check_name(input.name.as_deref())?;
        if !input.certs.is_empty() && !kind.has_certificates() {
            return Err(DomainError::Invalid(format!(
                "{} accounts hold no certificates",
                kind.xsi_type()
            )));
        }
        if input.certs.len() > MAX_CERTS_PER_ACCOUNT {
            return Err(DomainError::Invalid(format!(
                "an account holds at most {MAX_CERTS_PER_ACCOUNT} certificates"
            )));
        }
        let platform = match input.platform.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => {
                check_text("targetPlatform name", p, 255)?;
                p.to_string()
            }
            _ => kind.platform_name().to_string(),
        };
        let (fields, secrets) = split_values(kind, &input.values)?;
        let certs = input
            .certs
            .iter()
            .map(|c| self.seal_cert(c))
            .collect::<Result<Vec<_>>>()?;
        let new = NewAccount {
            owner_id: owner.id,
            name,
            kind,
            platform,
            fields,
            secrets: seal_with(&self.secrets, ACCOUNT_FIELD, new_uid(), &secrets)?,
            created: now_millis(),
            certs,
        };
        let account = self
            .store
            .create_account(&new, MAX_ACCOUNTS_PER_USER)
            .await?
            .ok_or_else(|| {
                DomainError::QuotaExceeded(format!(
                    "a user holds at most {MAX_ACCOUNTS_PER_USER} cloud accounts; delete one first"
                ))
            })?;
        tracing::info!(user = %owner.login, account = account.id, kind = kind.xsi_type(), "cloud account created");
        self.view_account(account, owner.login.clone(), false)
    }

    /// The target platforms a user may hold accounts for: one per subtype, numbered from 1 in
    /// [`AccountKind::ALL`]'s order (hammr looks a platform up by name, then picks its
    /// `fill_<type>` by the type).
    pub async fn target_platforms(
        &self,
        who: &Principal,
        uid: &str,
    ) -> Result<Vec<(Id, AccountKind)>> {
        self.target(who, uid).await?;
        Ok(AccountKind::ALL
            .iter()
            .enumerate()
            .map(|(i, k)| (i as Id + 1, *k))
            .collect())
    }

    pub async fn list_accounts(&self, who: &Principal, uid: &str) -> Result<Vec<AccountView>> {
        let owner = self.target(who, uid).await?;
        self.store
            .list_accounts(owner.id)
            .await?
            .into_iter()
            .map(|a| self.view_account(a, owner.login.clone(), false))
            .collect()
    }

    /// The account as its document shows it. Secrets are opened only when `reveal`, which only
    /// the owner may ask for (an administrator acting for them sees them masked), and which is
    /// logged without the values.
    pub fn account_view(&self, a: &OwnedAccount, reveal: bool) -> Result<AccountView> {
        if reveal {
            if a.who.user.id != a.owner.id {
                return Err(DomainError::Forbidden(
                    "only the account's owner may reveal its secrets".into(),
                ));
            }
            tracing::info!(user = %a.owner.login, account = a.account.id, "cloud account secrets revealed");
        }
        self.view_account(a.account.clone(), a.owner.login.clone(), reveal)
    }

    fn view_account(
        &self,
        account: Account,
        owner_login: String,
        reveal: bool,
    ) -> Result<AccountView> {
        let secrets: BTreeMap<String, String> = if reveal {
            open_secrets(&self.secrets, &account)?
        } else {
            BTreeMap::new()
        };
        let mut values = Vec::new();
        for field in account.kind.fields() {
            if field.secret {
                // Masked secrets show whether they are set only through the mask.
                match secrets.get(field.name) {
                    Some(v) => values.push((*field, Secret::text(v.clone()))),
                    None if !reveal => values.push((*field, Secret::text(MASK.into()))),
                    None => {}
                }
            } else if let Some(v) = account.fields.get(field.name) {
                values.push((*field, Secret::text(v.clone())));
            }
        }
        let certs = account
            .certs
            .iter()
            .map(|c| {
                Ok(CertView {
                    cert: c.clone(),
                    content: if reveal {
                        Some(open_with(&self.secrets, CERT_FIELD, &c.content)?)
                    } else {
                        None
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AccountView {
            account,
            owner_login,
            values,
            certs,
            revealed: reveal,
        })
    }

    /// Replaces the account's fields. A secret sent as the mask (what a `GET` showed) or left out
    /// keeps its sealed value, so a client may send back what it read.
    pub async fn update_account(
        &self,
        a: &OwnedAccount,
        input: AccountInput,
    ) -> Result<AccountView> {
        self.require(&a.who, ENT_SOFTWARE_UPLOAD)?;
        let kind = a.account.kind;
        if input.kind.is_some_and(|k| k != kind) {
            return Err(DomainError::Invalid(format!(
                "an account keeps its type ({})",
                kind.xsi_type()
            )));
        }
        let name = match input.name.as_deref() {
            Some(n) => check_name(Some(n))?,
            None => a.account.name.clone(),
        };
        let platform = match input.platform.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => {
                check_text("targetPlatform name", p, 255)?;
                p.to_string()
            }
            _ => a.account.platform.clone(),
        };
        let old = open_secrets(&self.secrets, &a.account)?;
        let mut values = input.values;
        for field in kind.fields() {
            let keep = match values.get(field.name) {
                None => true,
                Some(v) => field.secret && v.expose() == MASK.as_bytes(),
            };
            if keep {
                let prior = if field.secret {
                    old.get(field.name)
                } else {
                    a.account.fields.get(field.name)
                };
                match prior {
                    Some(p) => {
                        values.insert(field.name.to_string(), Secret::text(p.clone()));
                    }
                    None => {
                        values.remove(field.name);
                    }
                }
            }
        }
        let (fields, secrets) = split_values(kind, &values)?;
        let update = AccountUpdate {
            name,
            platform,
            fields,
            secrets: seal_with(
                &self.secrets,
                ACCOUNT_FIELD,
                a.account.secrets.uid.clone(),
                &secrets,
            )?,
            modified: now_millis(),
        };
        let account = self
            .store
            .update_account(a.owner.id, a.account.id, &update)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("credAccount {}", a.account.id)))?;
        tracing::info!(user = %a.owner.login, account = account.id, "cloud account updated");
        self.view_account(account, a.owner.login.clone(), false)
    }

    pub async fn delete_account(&self, a: &OwnedAccount) -> Result<()> {
        self.require(&a.who, ENT_SOFTWARE_UPLOAD)?;
        if !self.store.delete_account(a.owner.id, a.account.id).await? {
            return Err(DomainError::not_found(format!(
                "credAccount {}",
                a.account.id
            )));
        }
        tracing::info!(user = %a.owner.login, account = a.account.id, "cloud account deleted");
        Ok(())
    }

    /// Adds a certificate file (its content may follow with [`Satchel::upload_account_cert`]).
    pub async fn add_account_cert(
        &self,
        a: &OwnedAccount,
        input: CertInput,
    ) -> Result<AccountCert> {
        self.require(&a.who, ENT_SOFTWARE_UPLOAD)?;
        if !a.account.kind.has_certificates() {
            return Err(DomainError::Invalid(format!(
                "{} accounts hold no certificates",
                a.account.kind.xsi_type()
            )));
        }
        let new = self.seal_cert(&input)?;
        let cert = self
            .store
            .add_account_cert(a.account.id, &new, MAX_CERTS_PER_ACCOUNT as i64)
            .await?
            .ok_or_else(|| {
                DomainError::QuotaExceeded(format!(
                    "an account holds at most {MAX_CERTS_PER_ACCOUNT} certificates"
                ))
            })?;
        tracing::info!(user = %a.owner.login, account = a.account.id, cert = cert.id, "account certificate added");
        Ok(cert)
    }

    fn cert_of<'a>(&self, a: &'a OwnedAccount, certid: Id) -> Result<&'a AccountCert> {
        a.account
            .certs
            .iter()
            .find(|c| c.id == certid)
            .ok_or_else(|| DomainError::not_found(format!("certificate {certid}")))
    }

    /// Replaces a certificate file's content (and name).
    pub async fn upload_account_cert(
        &self,
        a: &OwnedAccount,
        certid: Id,
        file_name: &str,
        content: Secret,
    ) -> Result<AccountCert> {
        self.require(&a.who, ENT_SOFTWARE_UPLOAD)?;
        let cert = self.cert_of(a, certid)?;
        let (name, _) = check_cert(&CertInput {
            name: Some(file_name.to_string()),
            cert_type: None,
            content: Some(content.clone()),
        })?;
        let sealed = seal_with(
            &self.secrets,
            CERT_FIELD,
            cert.content.uid.clone(),
            content.expose(),
        )?;
        let updated = self
            .store
            .set_account_cert(a.account.id, certid, &name, content.len() as i64, &sealed)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("certificate {certid}")))?;
        tracing::info!(user = %a.owner.login, account = a.account.id, cert = certid, "account certificate uploaded");
        Ok(updated)
    }

    /// A certificate file's content: the owner's only, and logged like a reveal.
    pub fn download_account_cert(
        &self,
        a: &OwnedAccount,
        certid: Id,
    ) -> Result<(AccountCert, Secret)> {
        let cert = self.cert_of(a, certid)?;
        if a.who.user.id != a.owner.id {
            return Err(DomainError::Forbidden(
                "only the account's owner may download its certificates".into(),
            ));
        }
        let content = open_with(&self.secrets, CERT_FIELD, &cert.content)?;
        tracing::info!(user = %a.owner.login, account = a.account.id, cert = certid, "account certificate downloaded");
        Ok((cert.clone(), content))
    }

    pub async fn delete_account_cert(&self, a: &OwnedAccount, certid: Id) -> Result<()> {
        self.require(&a.who, ENT_SOFTWARE_UPLOAD)?;
        self.cert_of(a, certid)?;
        if !self.store.delete_account_cert(a.account.id, certid).await? {
            return Err(DomainError::not_found(format!("certificate {certid}")));
        }
        tracing::info!(user = %a.owner.login, account = a.account.id, cert = certid, "account certificate deleted");
        Ok(())
    }
}

/// Which table a sealed value is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    Account,
    Cert,
    /// A user's takeout webhook signing secret (`crate::notify`).
    NotifySecret,
    /// A takeout ticket's passphrase, sealed in its parameters until its job is over: a takeout
    /// still queued when the key is rotated must open it with the new one.
    TakeoutPassphrase,
}

impl SealedKind {
    fn field(self) -> (&'static str, &'static str) {
        match self {
            SealedKind::Account => ACCOUNT_FIELD,
            SealedKind::Cert => CERT_FIELD,
            SealedKind::NotifySecret => NOTIFY_FIELD,
            SealedKind::TakeoutPassphrase => PASSPHRASE_FIELD,
        }
    }
}

/// One sealed value, as a key rotation reads it.
#[derive(Debug, Clone)]
pub struct SealedRow {
    pub kind: SealedKind,
    pub id: Id,
    pub sealed: Sealed,
}

/// What a key rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Values re-sealed under the new key by this run.
    pub resealed: u64,
    /// Values sealed by a key that is neither the old nor the new one (left as they are).
    pub foreign: u64,
}

/// Rows read per statement by a rotation.
const ROTATE_PAGE: i64 = 200;

/// Re-seals every secret sealed with `old` under `new`, one row at a time, each written only if it
/// is still sealed with `old` (so servers writing meanwhile, and a second rotation, are never
/// overwritten). Rows already sealed with `new` are skipped: after a crash, run it again. Values
/// sealed with neither key are counted and left alone (reported, never guessed at).
pub async fn rotate<S: crate::ports::AccountStore + ?Sized>(
    store: &S,
    old: &SealKey,
    new: &SealKey,
) -> Result<Rotation> {
    let (old_id, new_id) = (old.key_id(), new.key_id());
    if old_id == new_id {
        return Err(DomainError::Invalid(
            "the new secrets key is the current one".into(),
        ));
    }
    let mut done = Rotation::default();
    for kind in [
        SealedKind::Account,
        SealedKind::Cert,
        SealedKind::NotifySecret,
        SealedKind::TakeoutPassphrase,
    ] {
        let field = kind.field();
        let mut after = 0;
        loop {
            let page = store.sealed_page(kind, &new_id, after, ROTATE_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for row in page {
                if row.sealed.key_id != old_id {
                    done.foreign += 1;
                    continue;
                }
                let plain = open_with(old, field, &row.sealed)?;
                let sealed = seal_with(new, field, row.sealed.uid.clone(), plain.expose())?;
                if store.reseal(kind, row.id, &old_id, &sealed).await? {
                    done.resealed += 1;
                }
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let s = Secret::text("hunter2-very-secret".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        let input = AccountInput {
            values: [("password".to_string(), s.clone())].into(),
            ..Default::default()
        };
        assert!(!format!("{input:?}").contains("hunter2"));
        let k = SealKey::random();
        let sealed = seal_with(&k, ACCOUNT_FIELD, new_uid(), b"hunter2-very-secret").unwrap();
        assert!(!format!("{sealed:?}").contains("hunter2"));
        assert!(!sealed.blob.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn sealed_values_open_only_where_they_belong() {
        let k = SealKey::random();
        let a = seal_with(&k, ACCOUNT_FIELD, new_uid(), b"v").unwrap();
        assert_eq!(open_with(&k, ACCOUNT_FIELD, &a).unwrap().expose(), b"v");
        assert_eq!(a.key_id, k.key_id());
        // Another row's binding id, another field, another key: none opens.
        let moved = Sealed {
            uid: new_uid(),
            ..a.clone()
        };
        assert!(open_with(&k, ACCOUNT_FIELD, &moved).is_err());
        assert!(open_with(&k, CERT_FIELD, &a).is_err());
        let err = open_with(&SealKey::random(), ACCOUNT_FIELD, &a).unwrap_err();
        assert!(err.to_string().contains("secrets key"), "{err}");
    }

    #[test]
    fn types_parse_with_or_without_prefix_and_unknown_ones_are_refused() {
        assert_eq!(
            AccountKind::parse("ns1:CredAccountAws").unwrap(),
            AccountKind::Aws
        );
        assert_eq!(
            AccountKind::parse("CredAccountOpenStack").unwrap(),
            AccountKind::OpenStack
        );
        for bad in ["CredAccount", "CredAccountCert", "ns1:CredAccountNope", ""] {
            assert!(AccountKind::parse(bad).is_err(), "{bad}");
        }
        // Every subtype has at most one secret per field name, and every Cert subtype is known.
        assert!(AccountKind::Aws.has_certificates() && AccountKind::Google.has_certificates());
        assert!(AccountKind::Aws.field("secretAccessKeyId").unwrap().secret);
        assert!(!AccountKind::Aws.field("accessKeyId").unwrap().secret);
    }

    #[test]
    fn values_split_into_fields_and_sealed_secrets() {
        let values: BTreeMap<String, Secret> = [
            ("glanceUrl", "http://g"),
            ("login", "me"),
            ("password", "pw"),
            ("unrelated", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Secret::text(v.into())))
        .collect();
        let (plain, secrets) = split_values(AccountKind::OpenStack, &values).unwrap();
        assert_eq!(plain.get("login").map(String::as_str), Some("me"));
        assert!(!plain.contains_key("password") && !plain.contains_key("unrelated"));
        assert_eq!(secrets.as_slice(), br#"{"password":"pw"}"#);
        let bad: BTreeMap<String, Secret> =
            [("port".to_string(), Secret::text("eighty".into()))].into();
        assert!(split_values(AccountKind::VSphere, &bad).is_err());
        let ctl: BTreeMap<String, Secret> = [(
            "password".to_string(),
            Secret::text("a\u{0}b-secret".into()),
        )]
        .into();
        let e = split_values(AccountKind::Docker, &ctl).unwrap_err();
        assert!(!e.to_string().contains("b-secret"), "{e}");
    }
}
