//! The client commands as clap declares them.

use super::EXIT_CODES;
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// How results are shown (every client command).
#[derive(Args, Clone, Debug, Default)]
pub struct Output {
    /// No progress bars and no messages on stderr (errors are still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// One JSON object per result on stdout.
    #[arg(long)]
    pub json: bool,
    /// Flush a downloaded archive to disk before it is renamed from FILE.part to FILE, so a power
    /// cut cannot leave a FILE that is not whole (as rsync's --fsync; curl and wget do not).
    #[arg(long)]
    pub fsync: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check a login against a Satchel server and store it (in
    /// $XDG_CONFIG_HOME/satchel/credentials.toml, mode 0600). SATCHEL_URL, SATCHEL_USER and
    /// SATCHEL_PASSWORD win over the stored values.
    #[command(after_help = EXIT_CODES)]
    Login {
        /// The server, e.g. https://satchel.example.org (with or without /api).
        url: String,
        /// The login name.
        #[arg(long, short)]
        user: String,
        /// Read the password from standard input (one line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Forget the stored login.
    #[command(after_help = EXIT_CODES)]
    Logout {
        #[command(flatten)]
        out: Output,
    },
    /// Software bundles.
    #[command(subcommand)]
    #[command(after_help = EXIT_CODES)]
    Bundles(BundlesCmd),
    /// Export something and download its archive (start, follow, download, verify).
    #[command(subcommand)]
    #[command(after_help = EXIT_CODES)]
    Export(ExportCmd),
    /// Exports already started.
    #[command(subcommand)]
    #[command(after_help = EXIT_CODES)]
    Exports(ExportsCmd),
}

#[derive(Subcommand)]
pub enum BundlesCmd {
    /// List your software bundles.
    #[command(after_help = EXIT_CODES)]
    List {
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Clone, Copy, ValueEnum, Debug)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
        }
    }
}

#[derive(Subcommand)]
pub enum ExportCmd {
    /// Export a software bundle: start the export, follow it, download the archive to FILE
    /// (through FILE.part: re-run the same command to resume an interrupted download) and check
    /// its sha256 against the server's digest.
    #[command(after_help = EXIT_CODES)]
    Bundle {
        /// The bundle: NAME, NAME@VERSION or its numeric id.
        bundle: String,
        /// The format of the bundle's description in the archive.
        #[arg(long, value_enum, default_value = "yaml")]
        format: Format,
        /// Where to write the archive [default: the server's file name, in the current directory].
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
    /// Generate a container image (a gzipped OCI image layout archive) from a bundle's container template and
    /// download it (through FILE.part, resumable, sha256 verified).
    #[command(after_help = EXIT_CODES)]
    ContainerImage {
        /// The bundle: NAME, NAME@VERSION or its numeric id.
        bundle: String,
        /// The container template's id (see the bundle's templates).
        template: i64,
        /// The image's name [default: the server's, from the bundle].
        #[arg(long)]
        name: Option<String>,
        /// Where to write the archive [default: NAME.oci.tar.gz in the current directory].
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
    /// Export a CloudAPI image (ExportImage) to a Manta path on the same server, as
    /// sdc-exportimage does, and wait until it is written; prints the image and manifest paths.
    #[command(after_help = EXIT_CODES)]
    Image {
        /// The image's UUID.
        uuid: String,
        /// Where to write it: a directory (/LOGIN/stor/DIR/) or a file name prefix.
        #[arg(long)]
        manta_path: String,
        /// The SSH private key (OpenSSH format, unencrypted) registered for the user
        /// [default: $SATCHEL_KEY, else ~/.ssh/id_ed25519, id_ecdsa, id_rsa].
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand)]
pub enum ExportsCmd {
    /// List your exports.
    #[command(after_help = EXIT_CODES)]
    List {
        #[command(flatten)]
        out: Output,
    },
    /// An export's status.
    #[command(after_help = EXIT_CODES)]
    Status {
        id: i64,
        #[command(flatten)]
        out: Output,
    },
    /// Follow an export until it is done and download its archive (resumable, verified).
    #[command(after_help = EXIT_CODES)]
    Download {
        id: i64,
        /// Where to write the archive [default: the server's file name, in the current directory].
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
    /// Stop an export that is still running (UForge has no separate cancel for bundle exports:
    /// the export is deleted; a finished one is refused, use `delete`).
    #[command(after_help = EXIT_CODES)]
    Cancel {
        id: i64,
        #[command(flatten)]
        out: Output,
    },
    /// Delete an export and its archive.
    #[command(after_help = EXIT_CODES)]
    Delete {
        id: i64,
        #[command(flatten)]
        out: Output,
    },
}
