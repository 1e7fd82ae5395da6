//! `satchel`: the one binary. `serve` runs the service; `admin` manages users in the same store;
//! the client commands (`login`, `bundles`, `export`, `exports`) speak HTTP to a server (`client/`).

mod client;
mod config;
mod framing;
mod http;
mod notify;
mod openapi;
mod ops;
mod redact;
mod sealkey;
mod serve;

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser, Subcommand};
use satchel_domain::model::NewUser;
use std::io::Read;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "satchel",
    version,
    about = "Export and data-portability service",
    after_help = client::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service.
    Serve(Box<config::ServeArgs>),
    /// Manage users of a Satchel store (works while the server runs).
    Admin {
        /// Data directory of the embedded store.
        #[arg(long, env = "SATCHEL_DATA_DIR", default_value = "./satchel-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        storage: config::StorageArgs,
        /// The cloud account secrets key (as `serve` takes it): `secrets rotate`'s current key.
        #[command(flatten)]
        secrets: config::SecretsKeyArgs,
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Apply the schema migrations of the configured store and exit (`serve` also applies them).
    Migrate {
        #[arg(long, env = "SATCHEL_DATA_DIR", default_value = "./satchel-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        storage: config::StorageArgs,
    },
    #[command(flatten)]
    Client(client::Command),
    /// Print a shell completion script (e.g. `satchel completions bash > /etc/bash_completion.d/satchel`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    #[command(subcommand)]
    User(UserCmd),
    /// SSH public keys that sign CloudAPI requests.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Remove blobs that nothing references (crash leftovers: unfinished uploads, objects whose
    /// rows were never written) once, now. Safe while servers run: what queued or running jobs may
    /// write is kept.
    Sweep {
        /// Only what has been untouched this long, e.g. "1h", "0s" (keep it above the longest
        /// pause of an upload in flight) [default: 1h].
        #[arg(long, default_value = "1h")]
        grace: String,
    },
    /// The key sealing cloud account secrets.
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Base distributions: OCI images container templates are built on.
    #[command(subcommand)]
    Distribution(DistributionCmd),
}

#[derive(Subcommand)]
enum DistributionCmd {
    /// Register a base image for NAME VERSION ARCH (e.g. `Debian 12 x86_64`) from an OCI image
    /// layout archive (tar or tar.gz, as `podman save --format oci-archive` or `skopeo copy ...
    /// oci-archive:FILE` write it). Its layers are stored once; templates naming this distribution
    /// are generated on it from then on.
    Add {
        name: String,
        version: String,
        arch: String,
        #[arg(long)]
        oci_archive: PathBuf,
    },
    /// List the registered distributions.
    List,
    /// Remove a distribution (refused while a container template names it; images already
    /// generated on it keep their layers).
    Remove {
        name: String,
        version: String,
        arch: String,
    },
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Re-seal every cloud account secret under a new key, in one pass. Resumable: a rerun skips
    /// what the new key already seals. Safe while servers run (each row is rewritten only if
    /// still sealed with the current key); once it reports no value left, give the servers the
    /// new key (e.g. replace the key file) and restart them.
    Rotate {
        /// The new key's file (64 hex digits); created with mode 0600 if it does not exist.
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Register an OpenSSH public key (a `.pub` file) for a user.
    Add {
        login: String,
        /// Key name (defaults to its MD5 fingerprint, as CloudAPI does).
        #[arg(long)]
        name: Option<String>,
        /// The public key file.
        #[arg(long)]
        file: PathBuf,
    },
    /// List a user's keys.
    List { login: String },
    /// Remove a key by name or fingerprint.
    Remove { login: String, key: String },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user.
    Add {
        login: String,
        /// Read the password from standard input (one line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Grant an entitlement (repeatable), e.g. software_upload.
        #[arg(long = "entitlement")]
        entitlements: Vec<String>,
        /// Make the user an administrator (may act on every user's things).
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Remove a user and everything they own.
    Remove { login: String },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cmd = match cli.cmd {
        Cmd::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "satchel", &mut script);
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return Ok(());
        }
        Cmd::Client(c) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::process::exit(rt.block_on(client::run(c)));
        }
        cmd => cmd,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            Cmd::Serve(args) => serve::run(*args).await,
            Cmd::Admin {
                data_dir,
                storage,
                secrets,
                cmd,
            } => admin(data_dir, storage, secrets, cmd).await,
            Cmd::Migrate { data_dir, storage } => {
                let o = serve::open(&storage, &data_dir).await?;
                println!(
                    "migrations applied ({})",
                    if o.shared { "PostgreSQL" } else { "SQLite" }
                );
                Ok(())
            }
            Cmd::Client(_) | Cmd::Completions { .. } => unreachable!("handled above"),
        }
    })
}

async fn admin(
    data_dir: PathBuf,
    storage: config::StorageArgs,
    current: config::SecretsKeyArgs,
    cmd: AdminCmd,
) -> anyhow::Result<()> {
    let opened = serve::open(&storage, &data_dir).await?;
    let (store, blobs) = (opened.store.clone(), opened.blobs.clone());
    let cmd = match cmd {
        AdminCmd::User(c) => c,
        AdminCmd::Key(k) => return admin_key(opened, k).await,
        AdminCmd::Distribution(d) => return admin_distribution(opened, d).await,
        AdminCmd::Secrets(SecretsCmd::Rotate { new_key_file }) => {
            // The current key must exist: a rotation never makes one up.
            let given = current.secrets_key.is_some() || current.secrets_key_file.is_some();
            let old = if given || opened.shared {
                sealkey::secrets_key(&current, &data_dir, true)?
            } else {
                sealkey::read_existing(&data_dir.join("secrets.key"))?
            };
            let new = sealkey::load_or_create(&new_key_file)?;
            let done = satchel_domain::accounts::rotate(store.as_ref(), &old, &new).await?;
            println!(
                "re-sealed {} secrets from key {} to key {}",
                done.resealed,
                old.key_id(),
                new.key_id()
            );
            if done.foreign > 0 {
                bail!(
                    "{} secrets are sealed with neither key and were left as they are",
                    done.foreign
                );
            }
            return Ok(());
        }
        AdminCmd::Sweep { grace } => {
            let grace = humantime::parse_duration(&grace)
                .with_context(|| format!("invalid duration for --grace: {grace:?}"))?;
            let r =
                satchel_domain::sweep::sweep_orphans(store.as_ref(), blobs.as_ref(), grace).await?;
            println!(
                "removed {} unreferenced objects, {} unfinished local uploads, {} unfinished \
                 multipart uploads ({} bytes); {} failed",
                r.objects, r.staged, r.uploads, r.bytes, r.failed
            );
            if r.failed > 0 {
                bail!("{} removals failed; the next sweep tries again", r.failed);
            }
            return Ok(());
        }
    };
    match cmd {
        UserCmd::Add {
            login,
            password_stdin: _,
            entitlements,
            admin,
        } => {
            satchel_domain::names::validate_login(&login)?;
            let mut pw = String::new();
            std::io::stdin()
                .read_to_string(&mut pw)
                .context("reading the password from stdin")?;
            let pw = pw.lines().next().unwrap_or("").to_string();
            if pw.is_empty() {
                bail!("empty password on stdin");
            }
            let hash = satchel_domain::auth::hash_password(&pw)?;
            let u = store
                .create_user(NewUser {
                    login,
                    password_hash: hash,
                    admin,
                    entitlements,
                })
                .await?;
            println!(
                "added user {} (id {}{})",
                u.login,
                u.id,
                if u.admin { ", admin" } else { "" }
            );
        }
        UserCmd::List => {
            for u in store.list_users().await? {
                println!(
                    "{}\t{}\t{}",
                    u.login,
                    if u.admin { "admin" } else { "user" },
                    u.entitlements.join(",")
                );
            }
        }
        UserCmd::Remove { login } => match store.delete_user(&login).await? {
            None => bail!("no such user: {login}"),
            Some(keys) => {
                for k in keys {
                    let _ = blobs.delete(&k).await;
                }
                println!("removed user {login}");
            }
        },
    }
    Ok(())
}

async fn admin_distribution(opened: serve::Opened, cmd: DistributionCmd) -> anyhow::Result<()> {
    use satchel_domain::distribution as dist;
    let (store, blobs) = (opened.store.as_ref(), &opened.blobs);
    match cmd {
        DistributionCmd::Add {
            name,
            version,
            arch,
            oci_archive,
        } => {
            // Fail early on a missing file; each pass opens it again.
            std::fs::metadata(&oci_archive)
                .with_context(|| format!("reading {}", oci_archive.display()))?;
            let path = oci_archive.clone();
            let open: dist::Opener = std::sync::Arc::new(move || {
                let f = std::fs::File::open(&path)?;
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)) as Box<dyn Read + Send>)
            });
            let d = dist::register(store, blobs, &name, &version, &arch, open).await?;
            println!(
                "registered distribution {} (id {}, {} layers)",
                dist::label(&d),
                d.id,
                d.layers.len()
            );
        }
        DistributionCmd::List => {
            for d in store.list_distributions().await? {
                let size: i64 = d.layers.iter().map(|l| l.size).sum();
                println!(
                    "{}\t{}\t{}\t{}\t{} layers\t{} bytes",
                    d.id,
                    d.name,
                    d.version,
                    d.arch,
                    d.layers.len(),
                    size
                );
            }
        }
        DistributionCmd::Remove {
            name,
            version,
            arch,
        } => {
            let want = satchel_domain::model::DistributionRef {
                name,
                version,
                arch,
            };
            let d = dist::remove(store, blobs, &want).await?;
            println!("removed distribution {}", dist::label(&d));
        }
    }
    Ok(())
}

async fn admin_key(opened: serve::Opened, cmd: KeyCmd) -> anyhow::Result<()> {
    let cloud = opened.cloud();
    let user = |login: String| {
        let cloud = &cloud;
        async move {
            cloud
                .account(&login)
                .await?
                .with_context(|| format!("no such user: {login}"))
        }
    };
    match cmd {
        KeyCmd::Add { login, name, file } => {
            let u = user(login).await?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let k = cloud.add_key(&u, name.as_deref(), &text).await?;
            println!("added key {} ({}) for {}", k.name, k.fingerprint, u.login);
        }
        KeyCmd::List { login } => {
            let u = user(login).await?;
            for k in cloud.list_keys(&u).await? {
                println!("{}\t{}", k.name, k.fingerprint);
            }
        }
        KeyCmd::Remove { login, key } => {
            let u = user(login).await?;
            cloud.delete_key(&u, &key).await?;
            println!("removed key {key} of {}", u.login);
        }
    }
    Ok(())
}
