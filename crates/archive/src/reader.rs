//! Reading an untrusted `.tar.gz` (a bundle or template import): a synchronous, streaming pass that
//! decides whether the archive is acceptable and hands each file member's bytes to the caller once.
//!
//! What it owns: the archive-level rules. Nothing is extracted to a file system and no member is
//! held in memory except the small root descriptor documents ([`ROOT_DOCS`]). Every refusal is a
//! [`ReadError`] naming the member (when there is one) and the [`Rule`] it broke.
//!
//! Decisions worth knowing:
//! - Paths are normalised (`./` and empty components dropped, trailing `/` removed) and kept as
//!   given otherwise (no Unicode normalisation here: the domain does that for names).
//! - A directory may appear more than once. A regular file may appear more than once only with
//!   byte-identical content: hammr's `tar.add(folder)` recurses and then adds each child of the
//!   folder again, so its archives repeat members. Repeats are hashed and compared, never passed to
//!   the caller again; a repeat with other content, or a path that is both a file and a directory,
//!   is [`Rule::Duplicate`].
//! - After the tar end-of-archive block, the rest of the decompressed stream must be zeros (tar's
//!   record padding); anything else is [`Rule::TrailingData`]. The gzip stream must end cleanly
//!   (every member's CRC and length checked, no bytes after the last member).
//! - GNU long names and pax headers are read by the `tar` crate into memory; they are bounded here
//!   by a per-header metadata budget (a hostile 1 GiB pax header is refused, not buffered).

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::rc::Rc;

/// Root documents read into memory instead of being passed to `on_file`.
pub const ROOT_DOCS: &[&str] = &[
    "bundle.yml",
    "bundle.yaml",
    "bundle.json",
    "template.yml",
    "template.yaml",
    "template.json",
    "manifest.json",
];

/// How much an archive may be.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Decompressed bytes in all (tar headers and padding included).
    pub max_total_bytes: u64,
    /// Tar entries, directories and metadata entries included.
    pub max_members: u64,
    /// Decompressed / compressed bytes, enforced once `ratio_grace_bytes` are decompressed.
    pub max_ratio: u64,
    pub ratio_grace_bytes: u64,
    pub max_member_bytes: u64,
    /// A root descriptor document (held in memory).
    pub max_doc_bytes: u64,
    /// One member path, in bytes.
    pub max_path_bytes: usize,
    /// Components in one member path.
    pub max_depth: usize,
    /// All member paths together (the duplicate check keeps them in memory).
    pub max_names_bytes: u64,
    /// Also accept an uncompressed tar (an OCI image layout archive as `podman save` writes it);
    /// the gzip checks then simply do not apply.
    pub plain_tar: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 64 << 30,
            max_members: 100_000,
            max_ratio: 1000,
            ratio_grace_bytes: 8 << 20,
            max_member_bytes: 64 << 30,
            max_doc_bytes: 1 << 20,
            max_path_bytes: 4096,
            max_depth: 64,
            max_names_bytes: 64 << 20,
            plain_tar: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    File,
    Dir,
}

/// A member as the caller sees it: `path` is normalised, relative, `/`-separated, valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub path: String,
    pub kind: MemberKind,
    pub size: u64,
}

/// A member that was read: every file (root documents included) with the sha256 of its bytes, and
/// every explicit directory (size 0, sha256 of nothing), in archive order, each path once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMember {
    pub path: String,
    pub kind: MemberKind,
    pub size: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, Default)]
pub struct ReadSummary {
    pub members: Vec<ReadMember>,
    /// Root documents ([`ROOT_DOCS`]) present, by name, each at most `max_doc_bytes`.
    pub docs: BTreeMap<String, Vec<u8>>,
    pub compressed_bytes: u64,
    pub expanded_bytes: u64,
}

/// The rule a refused archive broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    AbsolutePath,
    ParentDir,
    /// A symbolic or hard link.
    Link,
    /// A device, FIFO, sparse file or unknown entry type.
    SpecialFile,
    Duplicate,
    /// The data ends before what a header or the gzip stream announced.
    Truncated,
    NotGzip,
    /// A broken gzip stream (CRC, deflate data) or tar header (checksum, numbers, empty name).
    Corrupt,
    /// Non-zero bytes after the end of the tar archive.
    TrailingData,
    TooManyMembers,
    TooLarge,
    RatioExceeded,
    PathTooLong,
    TooDeep,
    BadUtf8,
    /// Reading the input itself failed.
    Io,
    /// `on_file` refused or failed.
    Caller,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AbsolutePath => "absolute-path",
            Rule::ParentDir => "parent-dir",
            Rule::Link => "link",
            Rule::SpecialFile => "special-file",
            Rule::Duplicate => "duplicate",
            Rule::Truncated => "truncated",
            Rule::NotGzip => "not-gzip",
            Rule::Corrupt => "corrupt",
            Rule::TrailingData => "trailing-data",
            Rule::TooManyMembers => "too-many-members",
            Rule::TooLarge => "too-large",
            Rule::RatioExceeded => "ratio-exceeded",
            Rule::PathTooLong => "path-too-long",
            Rule::TooDeep => "too-deep",
            Rule::BadUtf8 => "bad-utf8",
            Rule::Io => "io",
            Rule::Caller => "caller",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an archive was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// The member's path as far as it is known (normalised when it could be).
    pub member: Option<String>,
    pub rule: Rule,
    pub message: String,
}

impl ReadError {
    pub fn new(member: Option<&str>, rule: Rule, message: impl Into<String>) -> Self {
        ReadError {
            member: member.map(str::to_string),
            rule,
            message: message.into(),
        }
    }
    /// A refusal from `on_file` (storage failed, quota reached...).
    pub fn caller(member: &str, message: impl Into<String>) -> Self {
        ReadError::new(Some(member), Rule::Caller, message)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.member {
            Some(m) => write!(
                f,
                "archive member {m:?} refused ({}): {}",
                self.rule, self.message
            ),
            None => write!(f, "archive refused ({}): {}", self.rule, self.message),
        }
    }
}

impl std::error::Error for ReadError {}

/// What the layers under the tar parser saw; consulted first whenever an I/O error surfaces,
/// because the `tar` crate may reword errors passing through it.
#[derive(Default)]
struct Shared {
    compressed: u64,
    expanded: u64,
    /// Bytes the tar parser may still pull outside member data (headers, long names, pax).
    meta_budget: Option<u64>,
    gzip_eof: bool,
    failure: Option<(Rule, String)>,
}

type SharedRef = Rc<RefCell<Shared>>;

fn fail(shared: &SharedRef, rule: Rule, message: String) -> io::Error {
    let mut s = shared.borrow_mut();
    if s.failure.is_none() {
        s.failure = Some((rule, message.clone()));
    }
    io::Error::other(message)
}

/// Counts compressed bytes; a failure of the input itself is [`Rule::Io`].
struct CountIn<R> {
    inner: R,
    shared: SharedRef,
}

impl<R: Read> Read for CountIn<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.shared.borrow_mut().compressed += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(fail(
                &self.shared,
                Rule::Io,
                format!("reading the upload: {e}"),
            )),
        }
    }
}

/// Between gzip and tar: counts decompressed bytes and enforces the total, the ratio and the
/// metadata budget; classifies gzip failures.
struct Guard<R> {
    inner: R,
    shared: SharedRef,
    limits: Limits,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((_, m)) = &self.shared.borrow().failure {
            return Err(io::Error::other(m.clone()));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let rule = if e.kind() == io::ErrorKind::UnexpectedEof {
                    Rule::Truncated
                } else {
                    Rule::Corrupt
                };
                let what = if rule == Rule::Truncated {
                    "the gzip stream ends early".to_string()
                } else {
                    format!("broken gzip stream: {e}")
                };
                return Err(fail(&self.shared, rule, what));
            }
        };
        let mut s = self.shared.borrow_mut();
        if n == 0 {
            s.gzip_eof = true;
            return Ok(0);
        }
        s.expanded += n as u64;
        if let Some(b) = s.meta_budget.as_mut() {
            if (n as u64) > *b {
                drop(s);
                return Err(fail(
                    &self.shared,
                    Rule::TooLarge,
                    "tar metadata (long name or pax header) is too large".into(),
                ));
            }
            *b -= n as u64;
        }
        let (expanded, compressed) = (s.expanded, s.compressed.max(1));
        drop(s);
        if expanded > self.limits.max_total_bytes {
            return Err(fail(
                &self.shared,
                Rule::TooLarge,
                format!(
                    "the archive expands to more than {} bytes",
                    self.limits.max_total_bytes
                ),
            ));
        }
        if expanded > self.limits.ratio_grace_bytes && expanded / compressed > self.limits.max_ratio
        {
            return Err(fail(
                &self.shared,
                Rule::RatioExceeded,
                format!(
                    "{expanded} bytes expanded from {compressed} compressed: more than {}:1",
                    self.limits.max_ratio
                ),
            ));
        }
        Ok(n)
    }
}

/// The reader `on_file` gets: exactly the member's bytes, hashed as they pass.
struct MemberReader<'a> {
    inner: &'a mut dyn Read,
    remaining: u64,
    read: u64,
    hasher: Sha256,
    short: bool,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.short = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "member data is shorter than its header says",
            ));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        self.read += n as u64;
        Ok(n)
    }
}

impl MemberReader<'_> {
    fn drain(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        while self.read(&mut buf)? > 0 {}
        Ok(())
    }
}

/// Reads `input` (a gzip-compressed tar) to its end, applying every rule; `on_file` is called for
/// each regular file that is not a root document, the first time its path appears, with a reader
/// of exactly its bytes. Synchronous: run it on a blocking thread.
pub fn read_archive<R, F>(
    input: R,
    limits: &Limits,
    mut on_file: F,
) -> Result<ReadSummary, ReadError>
where
    R: Read,
    F: FnMut(&MemberInfo, &mut dyn Read) -> Result<(), ReadError>,
{
    let shared: SharedRef = Rc::default();
    let mut input = CountIn {
        inner: input,
        shared: shared.clone(),
    };
    // Sniff the magic before gzip sees anything, so "not gzip" is told apart from "broken gzip".
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match input.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::new(None, Rule::Io, e.to_string())),
        }
    }
    let gzip = got == 2 && magic == [0x1f, 0x8b];
    let plain = !gzip && limits.plain_tar && got > 0;
    if !gzip && !plain {
        return Err(ReadError::new(
            None,
            Rule::NotGzip,
            if got == 0 {
                "the upload is empty, not a .tar.gz".to_string()
            } else {
                "the upload is not gzip-compressed (no gzip magic)".to_string()
            },
        ));
    }
    let head = io::Cursor::new(magic).take(got as u64).chain(input);
    let gz: Box<dyn Read + '_> = if gzip {
        Box::new(MultiGzDecoder::new(head))
    } else {
        Box::new(head)
    };
    let guard = Guard {
        inner: gz,
        shared: shared.clone(),
        limits: limits.clone(),
    };
    let mut st = State {
        limits,
        shared: &shared,
        summary: ReadSummary::default(),
        files: HashMap::new(),
        dirs: HashSet::new(),
        explicit_dirs: HashSet::new(),
        names_bytes: 0,
        members: 0,
    };
    let mut ar = tar::Archive::new(guard);
    let mut entries = ar
        .entries()
        .map_err(|e| st.io_error(None, Rule::Corrupt, &e))?;
    loop {
        // Headers, GNU long names and pax records are read inside `next()`; bound them.
        let budget = limits.max_path_bytes as u64 * 2 + 64 * 1024 + 4 * 512;
        shared.borrow_mut().meta_budget = Some(budget);
        let next = entries.next();
        shared.borrow_mut().meta_budget = None;
        let mut entry = match next {
            // The tar crate also stops at a clean end of input: no end-of-archive block then.
            None if shared.borrow().gzip_eof => {
                return Err(ReadError::new(
                    None,
                    Rule::Truncated,
                    "the tar archive has no end-of-archive block",
                ))
            }
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(st.io_error(None, Rule::Corrupt, &e)),
        };
        st.members += 1;
        if st.members > limits.max_members {
            return Err(ReadError::new(
                None,
                Rule::TooManyMembers,
                format!("more than {} members", limits.max_members),
            ));
        }
        st.entry(&mut entry, &mut on_file)?;
    }

    // The tar end: the rest must be zero padding, and the gzip stream must end cleanly.
    let mut rest = ar.into_inner();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if buf[..n].iter().any(|&b| b != 0) {
                    return Err(ReadError::new(
                        None,
                        Rule::TrailingData,
                        "data follows the end of the tar archive",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(st.io_error(None, Rule::Corrupt, &e)),
        }
    }
    let s = shared.borrow();
    st.summary.compressed_bytes = s.compressed;
    st.summary.expanded_bytes = s.expanded;
    Ok(st.summary)
}

struct State<'l> {
    limits: &'l Limits,
    shared: &'l SharedRef,
    summary: ReadSummary,
    /// File path -> index in `summary.members`.
    files: HashMap<String, usize>,
    /// Explicit and implied directories.
    dirs: HashSet<String>,
    /// Directories that have their own entry (listed once in `summary.members`).
    explicit_dirs: HashSet<String>,
    names_bytes: u64,
    members: u64,
}

impl State<'_> {
    /// The error for an I/O failure: what the layers below recorded, else `fallback`.
    fn io_error(&self, member: Option<&str>, fallback: Rule, e: &io::Error) -> ReadError {
        let s = self.shared.borrow();
        if let Some((rule, msg)) = &s.failure {
            return ReadError::new(member, *rule, msg.clone());
        }
        if s.gzip_eof || e.kind() == io::ErrorKind::UnexpectedEof {
            return ReadError::new(
                member,
                Rule::Truncated,
                format!("the tar stream ends early: {e}"),
            );
        }
        ReadError::new(member, fallback, e.to_string())
    }

    fn entry<R: Read, F>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        on_file: &mut F,
    ) -> Result<(), ReadError>
    where
        F: FnMut(&MemberInfo, &mut dyn Read) -> Result<(), ReadError>,
    {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        let size = entry.size();
        if raw.len() > self.limits.max_path_bytes {
            let cut: String = shown.chars().take(64).collect();
            return Err(ReadError::new(
                Some(&format!("{cut}...")),
                Rule::PathTooLong,
                format!(
                    "the path is {} bytes, more than {}",
                    raw.len(),
                    self.limits.max_path_bytes
                ),
            ));
        }
        use tar::EntryType as T;
        let member_kind = match kind {
            // Pre-POSIX archives mark a directory by a trailing `/` on a regular entry.
            T::Regular if raw.ends_with(b"/") && size == 0 => MemberKind::Dir,
            T::Regular | T::Continuous => MemberKind::File,
            T::Directory => MemberKind::Dir,
            T::Symlink => {
                return Err(ReadError::new(
                    Some(&shown),
                    Rule::Link,
                    "symbolic links are not accepted",
                ))
            }
            T::Link => {
                return Err(ReadError::new(
                    Some(&shown),
                    Rule::Link,
                    "hard links are not accepted",
                ))
            }
            T::Char | T::Block => {
                return Err(ReadError::new(
                    Some(&shown),
                    Rule::SpecialFile,
                    "device files are not accepted",
                ))
            }
            T::Fifo => {
                return Err(ReadError::new(
                    Some(&shown),
                    Rule::SpecialFile,
                    "FIFOs are not accepted",
                ))
            }
            T::GNUSparse => {
                return Err(ReadError::new(
                    Some(&shown),
                    Rule::SpecialFile,
                    "sparse files are not accepted",
                ))
            }
            T::XGlobalHeader => {
                // A pax global header carries no file; drain it within the metadata bound.
                if size > 64 * 1024 {
                    return Err(ReadError::new(
                        None,
                        Rule::TooLarge,
                        "a pax global header is too large",
                    ));
                }
                return self.drain_unnamed(entry, size, &shown);
            }
            other => {
                return Err(ReadError::new(
                    Some(&shown),
                    Rule::SpecialFile,
                    format!("entry type {:?} is not accepted", other.as_byte() as char),
                ))
            }
        };
        let path = self.normalise(&raw, &shown)?;
        if size > self.limits.max_member_bytes {
            return Err(ReadError::new(
                Some(&shown),
                Rule::TooLarge,
                format!("{size} bytes, more than {}", self.limits.max_member_bytes),
            ));
        }
        let Some(path) = path else {
            // The archive root itself (`./`), as `tar -C dir .` writes it.
            if member_kind == MemberKind::Dir {
                return self.drain_unnamed(entry, size, &shown);
            }
            return Err(ReadError::new(
                Some(&shown),
                Rule::Corrupt,
                "a file member has an empty path",
            ));
        };
        match member_kind {
            MemberKind::Dir => {
                if self.files.contains_key(&path) {
                    return Err(ReadError::new(
                        Some(&path),
                        Rule::Duplicate,
                        "the path is both a file and a directory",
                    ));
                }
                self.add_ancestors(&path)?;
                self.drain_unnamed(entry, size, &path)?;
                if !self.dirs.contains(&path) {
                    self.note_name(&path)?;
                    self.dirs.insert(path.clone());
                }
                if self.explicit_dirs.insert(path.clone()) {
                    self.summary.members.push(ReadMember {
                        path,
                        kind: MemberKind::Dir,
                        size: 0,
                        sha256: Sha256::digest([]).into(),
                    });
                }
                Ok(())
            }
            MemberKind::File => self.file(entry, path, size, on_file),
        }
    }

    fn file<R: Read, F>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: String,
        size: u64,
        on_file: &mut F,
    ) -> Result<(), ReadError>
    where
        F: FnMut(&MemberInfo, &mut dyn Read) -> Result<(), ReadError>,
    {
        if self.dirs.contains(&path) {
            return Err(ReadError::new(
                Some(&path),
                Rule::Duplicate,
                "the path is both a directory and a file",
            ));
        }
        let is_doc = ROOT_DOCS.contains(&path.as_str());
        if is_doc && size > self.limits.max_doc_bytes {
            return Err(ReadError::new(
                Some(&path),
                Rule::TooLarge,
                format!(
                    "a descriptor document of {size} bytes, more than {}",
                    self.limits.max_doc_bytes
                ),
            ));
        }
        let repeat = self.files.get(&path).copied();
        if repeat.is_none() {
            self.add_ancestors(&path)?;
            self.note_name(&path)?;
        }
        let mut r = MemberReader {
            inner: entry,
            remaining: size,
            read: 0,
            hasher: Sha256::new(),
            short: false,
        };
        let mut doc = Vec::new();
        let outcome = if repeat.is_some() {
            r.drain()
                .map_err(|e| self.member_error(&path, &r, Rule::Io, e.to_string()))
        } else if is_doc {
            r.read_to_end(&mut doc)
                .map(drop)
                .map_err(|e| self.member_error(&path, &r, Rule::Io, e.to_string()))
        } else {
            let info = MemberInfo {
                path: path.clone(),
                kind: MemberKind::File,
                size,
            };
            match on_file(&info, &mut r) {
                Ok(()) => r
                    .drain()
                    .map_err(|e| self.member_error(&path, &r, Rule::Io, e.to_string())),
                // What the reader saw beneath the caller comes first: the caller only relays it.
                Err(e) => Err(self
                    .member_error(&path, &r, e.rule, e.message)
                    .with_member(&path)),
            }
        };
        outcome?;
        if r.read != size {
            return Err(ReadError::new(
                Some(&path),
                Rule::Truncated,
                format!("{} bytes of data, the header says {size}", r.read),
            ));
        }
        let sha256: [u8; 32] = r.hasher.finalize().into();
        if let Some(i) = repeat {
            let first = &self.summary.members[i];
            if first.size != size || first.sha256 != sha256 {
                return Err(ReadError::new(
                    Some(&path),
                    Rule::Duplicate,
                    "the path appears twice with different content",
                ));
            }
            return Ok(());
        }
        if is_doc {
            self.summary.docs.insert(path.clone(), doc);
        }
        self.files.insert(path.clone(), self.summary.members.len());
        self.summary.members.push(ReadMember {
            path,
            kind: MemberKind::File,
            size,
            sha256,
        });
        Ok(())
    }

    /// The error for a failure while a member's data was read.
    fn member_error(
        &self,
        path: &str,
        r: &MemberReader<'_>,
        rule: Rule,
        message: String,
    ) -> ReadError {
        if let Some((rule, msg)) = &self.shared.borrow().failure {
            return ReadError::new(Some(path), *rule, msg.clone());
        }
        if r.short {
            return ReadError::new(
                Some(path),
                Rule::Truncated,
                format!("{} bytes of data, the header says more", r.read),
            );
        }
        ReadError::new(Some(path), rule, message)
    }

    /// Reads a member nobody wants (a directory's stray data, a pax global header).
    fn drain_unnamed<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        size: u64,
        shown: &str,
    ) -> Result<(), ReadError> {
        let mut r = MemberReader {
            inner: entry,
            remaining: size,
            read: 0,
            hasher: Sha256::new(),
            short: false,
        };
        r.drain()
            .map_err(|e| self.member_error(shown, &r, Rule::Io, e.to_string()))
    }

    fn note_name(&mut self, path: &str) -> Result<(), ReadError> {
        self.names_bytes += path.len() as u64;
        if self.names_bytes > self.limits.max_names_bytes {
            return Err(ReadError::new(
                Some(path),
                Rule::TooLarge,
                format!(
                    "member paths total more than {} bytes",
                    self.limits.max_names_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Records `path`'s parent directories, refusing a parent that is a file.
    fn add_ancestors(&mut self, path: &str) -> Result<(), ReadError> {
        let mut p = path;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if self.dirs.contains(p) {
                // Its own ancestors were checked when it was added.
                break;
            }
            if self.files.contains_key(p) {
                return Err(ReadError::new(
                    Some(path),
                    Rule::Duplicate,
                    format!("its parent {p:?} is a file"),
                ));
            }
            self.names_bytes += p.len() as u64;
            self.dirs.insert(p.to_string());
        }
        Ok(())
    }

    /// The normalised path, `None` for the archive root.
    fn normalise(&self, raw: &[u8], shown: &str) -> Result<Option<String>, ReadError> {
        let Ok(s) = std::str::from_utf8(raw) else {
            return Err(ReadError::new(
                Some(shown),
                Rule::BadUtf8,
                "the path is not valid UTF-8",
            ));
        };
        if s.contains('\0') {
            return Err(ReadError::new(
                Some(shown),
                Rule::Corrupt,
                "the path contains NUL",
            ));
        }
        if s.starts_with('/') || s.starts_with('\\') || has_drive_prefix(s) {
            return Err(ReadError::new(
                Some(s),
                Rule::AbsolutePath,
                "absolute paths are not accepted",
            ));
        }
        let mut parts = Vec::new();
        for c in s.split('/') {
            match c {
                "" | "." => {}
                // `\` is a separator where such an archive might be extracted (Windows).
                _ if c == ".." || c.split('\\').any(|x| x == "..") => {
                    return Err(ReadError::new(
                        Some(s),
                        Rule::ParentDir,
                        "paths with a `..` component are not accepted",
                    ))
                }
                _ => parts.push(c),
            }
        }
        if parts.len() > self.limits.max_depth {
            return Err(ReadError::new(
                Some(s),
                Rule::TooDeep,
                format!(
                    "{} path components, more than {}",
                    parts.len(),
                    self.limits.max_depth
                ),
            ));
        }
        Ok((!parts.is_empty()).then(|| parts.join("/")))
    }
}

fn has_drive_prefix(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

impl ReadError {
    fn with_member(mut self, path: &str) -> Self {
        if self.member.is_none() {
            self.member = Some(path.to_string());
        }
        self
    }
}
