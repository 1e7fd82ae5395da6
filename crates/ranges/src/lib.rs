//! Representations, once for both faces: conditional requests decided in RFC 9110 §13.2.2 order
//! (`If-None-Match`, or `If-Modified-Since` without it → 304; then `If-Range`; then `Range` → 206,
//! 416, or the whole representation), and [`serve`], the one routine that streams a blob as the
//! answer (200, 206, `multipart/byteranges`, 304, 416). Documents that are not blobs (a ticket's
//! status) use [`not_modified`] with the same rules.
//!
//! The decision takes header text and gives an [`Answer`], so a caller can act on it (spend a
//! one-time id) before any byte is read; only the error body of a 416 is the face's. The rules
//! that are easy to get wrong:
//! - a suffix longer than the representation selects all of it (§14.1.2), it is not a 416;
//! - a `Range` with another unit or invalid syntax is ignored (§14.2): the answer is a plain 200;
//! - a well-formed range set none of whose ranges start inside the representation is a 416.

use http::{header, HeaderMap};
use std::ops::RangeInclusive;

/// What to answer a GET (or HEAD) of one representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `304 Not Modified`: the client's copy (`If-None-Match`) is current.
    NotModified,
    /// `200` with the whole representation.
    Full,
    /// `206` with these ranges, non-empty, each within the representation; several only when
    /// they neither overlap nor touch (those are merged), in the order the client asked.
    Partial(Vec<RangeInclusive<u64>>),
    /// `416`: the range set is valid but no range of it starts inside the representation.
    Unsatisfiable,
}

impl Answer {
    /// Whether the answer carries the representation's bytes (200 or 206).
    pub fn sends_bytes(&self) -> bool {
        matches!(self, Answer::Full | Answer::Partial(_))
    }
}

pub mod serve;
pub use serve::{serve, Representation};

/// The conditional and range headers of a request, as text.
#[derive(Debug, Clone, Default)]
pub struct Conditions<'a> {
    /// Every `If-None-Match` line (a list may be split over several).
    pub if_none_match: Vec<&'a str>,
    /// `If-Range`; a value that is not text is kept as `Some("")`, which never matches.
    pub if_range: Option<&'a str>,
    /// `Range`; a value that is not text, or repeated header lines, count as invalid (ignored).
    pub range: Option<&'a str>,
    /// `If-Modified-Since`; only consulted without `If-None-Match` (§13.2.2).
    pub if_modified_since: Option<&'a str>,
}

impl<'a> Conditions<'a> {
    pub fn from_headers(h: &'a HeaderMap) -> Self {
        let mut ranges = h.get_all(header::RANGE).iter();
        let range = match (ranges.next(), ranges.next()) {
            (Some(v), None) => Some(v.to_str().unwrap_or("")),
            // Range is a singleton field: two of them are an invalid request, so ignored.
            (Some(_), Some(_)) => Some(""),
            (None, _) => None,
        };
        Conditions {
            if_none_match: h
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect(),
            if_range: h.get(header::IF_RANGE).map(|v| v.to_str().unwrap_or("")),
            range,
            if_modified_since: h
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok()),
        }
    }
}

/// Decides the answer for a representation of `size` bytes whose strong entity tag is `etag`
/// (quoted, as sent in `ETag`). More than `max_ranges` ranges (after merging) get the whole
/// representation, as §14.2 allows, so a request cannot ask for the same bytes many times over.
pub fn evaluate(c: &Conditions, etag: &str, size: u64, max_ranges: usize) -> Answer {
    evaluate_at(c, etag, None, size, max_ranges)
}

/// [`evaluate`] for a representation last modified at `last_modified_ms` (milliseconds since the
/// epoch), so `If-Modified-Since` is honoured too.
pub fn evaluate_at(
    c: &Conditions,
    etag: &str,
    last_modified_ms: Option<i64>,
    size: u64,
    max_ranges: usize,
) -> Answer {
    if not_modified(c, etag, last_modified_ms) {
        return Answer::NotModified;
    }
    let Some(range) = c.range else {
        return Answer::Full;
    };
    // If-Range: ranges only if the client's copy is this representation (strong comparison).
    // A date never matches here, which at worst sends the whole representation again.
    if let Some(ir) = c.if_range {
        let ir = ir.trim();
        if !(ir.starts_with('"') && ir == etag) {
            return Answer::Full;
        }
    }
    let Some(specs) = parse_range(range) else {
        return Answer::Full;
    };
    select(&specs, size, max_ranges)
}

/// One `range-spec` of a `bytes` range set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// `first-last` or `first-` (open: to the end).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// Parses `bytes=...` (RFC 9110 §14.1.1). `None` when the unit is not `bytes` or the syntax is
/// invalid, including a range whose last position is before its first: such a header is ignored.
/// Numbers too large for u64 saturate (a range starting there is merely unsatisfiable).
pub fn parse_range(s: &str) -> Option<Vec<Spec>> {
    let (unit, set) = s.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // `1#range-spec`: empty list elements are allowed (and skipped), at least one is required.
    for part in set.split(',') {
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() {
            continue;
        }
        let (first, last) = part.split_once('-')?;
        let spec = match (first.is_empty(), last.is_empty()) {
            (true, true) => return None,
            (true, false) => Spec::Suffix(number(last)?),
            (false, true) => Spec::From(number(first)?, None),
            (false, false) => {
                let (a, b) = (number(first)?, number(last)?);
                if b < a {
                    return None;
                }
                Spec::From(a, Some(b))
            }
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// `1*DIGIT`, saturating.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// The satisfiable ranges of a parsed set (§14.1.2), merged where they overlap or touch.
pub fn select(specs: &[Spec], size: u64, max_ranges: usize) -> Answer {
    if size == 0 {
        // Only a non-zero suffix is satisfiable on an empty representation, and it is all of it.
        return if specs.iter().any(|s| matches!(s, Spec::Suffix(n) if *n > 0)) {
            Answer::Full
        } else {
            Answer::Unsatisfiable
        };
    }
    let last = size - 1;
    let mut ranges: Vec<RangeInclusive<u64>> = specs
        .iter()
        .filter_map(|s| match *s {
            Spec::Suffix(0) => None,
            // A suffix longer than the representation selects all of it.
            Spec::Suffix(n) => Some(size.saturating_sub(n)..=last),
            Spec::From(a, _) if a > last => None,
            Spec::From(a, b) => Some(a..=b.unwrap_or(last).min(last)),
        })
        .collect();
    if ranges.is_empty() {
        return Answer::Unsatisfiable;
    }
    if overlap_or_touch(&ranges) {
        // Coalesced (§14.2 allows it), sorted: the same bytes are never sent twice.
        ranges.sort_by_key(|r| *r.start());
        let mut merged: Vec<RangeInclusive<u64>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(m) if *r.start() <= m.end().saturating_add(1) => {
                    *m = *m.start()..=(*m.end()).max(*r.end());
                }
                _ => merged.push(r),
            }
        }
        ranges = merged;
    }
    if ranges.len() > max_ranges.max(1) {
        return Answer::Full;
    }
    Answer::Partial(ranges)
}

fn overlap_or_touch(ranges: &[RangeInclusive<u64>]) -> bool {
    let mut sorted: Vec<_> = ranges.iter().collect();
    sorted.sort_by_key(|r| *r.start());
    sorted
        .windows(2)
        .any(|w| *w[1].start() <= w[0].end().saturating_add(1))
}

/// `If-None-Match` against the current tag with the weak comparison (§13.1.2): `*` matches any
/// existing representation. A malformed list matches nothing (the condition is ignored).
/// Whether the client's copy is current (a `304` for GET and HEAD): `If-None-Match` by weak
/// comparison (a `W/` tag matches its strong twin, §13.1.2), or, only when that header is absent,
/// `If-Modified-Since` at one-second precision; an unparsable date is ignored (§13.1.3).
pub fn not_modified(c: &Conditions, etag: &str, last_modified_ms: Option<i64>) -> bool {
    if !c.if_none_match.is_empty() {
        return none_match_hits(&c.if_none_match, etag);
    }
    let (Some(ims), Some(lm)) = (c.if_modified_since, last_modified_ms) else {
        return false;
    };
    match httpdate::parse_http_date(ims.trim()) {
        Ok(since) => {
            let since_s = since
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            lm.div_euclid(1000) <= since_s
        }
        Err(_) => false,
    }
}

fn none_match_hits(lines: &[&str], etag: &str) -> bool {
    let current = opaque(etag);
    lines.iter().any(|line| {
        if line.trim() == "*" {
            return true;
        }
        entity_tags(line).is_some_and(|tags| tags.iter().any(|t| Some(*t) == current))
    })
}

/// The opaque part (between the quotes) of `W/"x"` or `"x"`.
fn opaque(tag: &str) -> Option<&str> {
    let t = tag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.strip_prefix('"')?.strip_suffix('"')
}

/// The opaque parts of a comma-separated entity-tag list; `None` when it is malformed. Tags may
/// hold commas, so the list is scanned quote by quote rather than split.
fn entity_tags(list: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix("W/").unwrap_or(rest);
        let body = rest.strip_prefix('"')?;
        let end = body.find('"')?;
        out.push(&body[..end]);
        rest = &body[end + 1..];
        let next = rest.trim_start_matches([' ', '\t']);
        if !(next.is_empty() || next.starts_with(',')) {
            return None;
        }
        rest = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TAG: &str = "\"abc\"";

    fn ask(range: &str, size: u64) -> Answer {
        let c = Conditions {
            range: Some(range),
            ..Default::default()
        };
        evaluate(&c, TAG, size, 64)
    }

    #[test]
    fn ranges() {
        assert_eq!(ask("bytes=0-9", 100), Answer::Partial(vec![0..=9]));
        assert_eq!(ask("bytes=90-", 100), Answer::Partial(vec![90..=99]));
        assert_eq!(ask("bytes=90-1000", 100), Answer::Partial(vec![90..=99]));
        assert_eq!(ask("bytes=-10", 100), Answer::Partial(vec![90..=99]));
        assert_eq!(ask("BYTES=0-0", 100), Answer::Partial(vec![0..=0]));
        // §14.1.2: a suffix longer than the representation is all of it.
        assert_eq!(
            ask("bytes=-2000000", 1 << 20),
            Answer::Partial(vec![0..=(1 << 20) - 1])
        );
        assert_eq!(
            ask("bytes=-99999999999999999999999", 10),
            Answer::Partial(vec![0..=9])
        );
        // Several, in the asked order; overlapping or touching ones merged and sorted.
        assert_eq!(
            ask("bytes=50-59, 0-9", 100),
            Answer::Partial(vec![50..=59, 0..=9])
        );
        assert_eq!(
            ask("bytes=0-9,5-19,20-29", 100),
            Answer::Partial(vec![0..=29])
        );
        assert_eq!(ask("bytes=0-,0-,0-", 100), Answer::Partial(vec![0..=99]));
        assert_eq!(
            ask("bytes=0-0,,2-2", 100),
            Answer::Partial(vec![0..=0, 2..=2])
        );
        // Unsatisfiable ranges are dropped; none left is a 416.
        assert_eq!(ask("bytes=999999-", 1189), Answer::Unsatisfiable);
        assert_eq!(ask("bytes=100-200", 100), Answer::Unsatisfiable);
        assert_eq!(ask("bytes=-0", 100), Answer::Unsatisfiable);
        assert_eq!(ask("bytes=100-,5-6", 100), Answer::Partial(vec![5..=6]));
        assert_eq!(
            ask("bytes=99999999999999999999999-", 100),
            Answer::Unsatisfiable
        );
        assert_eq!(ask("bytes=0-", 0), Answer::Unsatisfiable);
        assert_eq!(ask("bytes=-5", 0), Answer::Full);
        // Another unit or invalid syntax: ignored (§14.2).
        for bad in [
            "items=0-9",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=a-b",
            "bytes=9-0",
            "bytes=0-9;x",
            "bytes= 1 - 2",
            "bytes=--1",
            "bytes=+1-2",
            "garbage",
            "",
        ] {
            assert_eq!(ask(bad, 100), Answer::Full, "{bad:?}");
        }
        // Too many ranges: the whole thing.
        let many = (0..65)
            .map(|i| format!("{}-{}", i * 3, i * 3))
            .collect::<Vec<_>>();
        assert_eq!(
            ask(&format!("bytes={}", many.join(",")), 1000),
            Answer::Full
        );
    }

    #[test]
    fn if_modified_since_only_without_if_none_match() {
        let lm = 1_700_000_000_500; // ms; the header has second precision
        let at = |ims: &'static str, inm: &'static [&'static str]| Conditions {
            if_none_match: inm.to_vec(),
            if_modified_since: Some(ims),
            ..Default::default()
        };
        let date = "Tue, 14 Nov 2023 22:13:20 GMT"; // 1_700_000_000 s
        let earlier = "Tue, 14 Nov 2023 22:13:19 GMT";
        assert!(not_modified(&at(date, &[]), TAG, Some(lm)));
        assert!(!not_modified(&at(earlier, &[]), TAG, Some(lm)));
        assert!(!not_modified(&at("yesterday", &[]), TAG, Some(lm)));
        assert!(!not_modified(&at(date, &[]), TAG, None));
        // If-None-Match decides alone when present, both ways.
        assert!(!not_modified(&at(date, &["\"other\""]), TAG, Some(lm)));
        assert!(not_modified(&at(earlier, &["W/\"abc\""]), TAG, Some(lm)));
        assert_eq!(
            evaluate_at(&at(date, &[]), TAG, Some(lm), 10, 1),
            Answer::NotModified
        );
    }

    #[test]
    fn conditions() {
        let c = |inm: &'static [&'static str], ir: Option<&'static str>| Conditions {
            if_none_match: inm.to_vec(),
            if_range: ir,
            range: Some("bytes=0-0"),
            if_modified_since: None,
        };
        assert_eq!(
            evaluate(&c(&["\"abc\""], None), TAG, 10, 1),
            Answer::NotModified
        );
        assert_eq!(
            evaluate(&c(&["W/\"abc\""], None), TAG, 10, 1),
            Answer::NotModified
        );
        assert_eq!(
            evaluate(&c(&["\"x\", \"abc\""], None), TAG, 10, 1),
            Answer::NotModified
        );
        assert_eq!(
            evaluate(&c(&["\"x\"", "\"abc\""], None), TAG, 10, 1),
            Answer::NotModified
        );
        assert_eq!(evaluate(&c(&["*"], None), TAG, 10, 1), Answer::NotModified);
        assert_eq!(
            evaluate(&c(&["\"a,b\", \"abc\""], None), TAG, 10, 1),
            Answer::NotModified
        );
        // A miss or a malformed list: the range is served.
        for inm in [
            &["\"x\""][..],
            &["abc"],
            &["\"abc"],
            &["\"x\" junk, \"abc\""],
        ] {
            assert_eq!(
                evaluate(&c(inm, None), TAG, 10, 1),
                Answer::Partial(vec![0..=0]),
                "{inm:?}"
            );
        }
        // 304 comes before 416.
        let unsat = Conditions {
            if_none_match: vec![TAG],
            if_range: None,
            range: Some("bytes=50-"),
            if_modified_since: None,
        };
        assert_eq!(evaluate(&unsat, TAG, 10, 1), Answer::NotModified);
        // If-Range: strong match only; anything else sends everything.
        assert_eq!(
            evaluate(&c(&[], Some(TAG)), TAG, 10, 1),
            Answer::Partial(vec![0..=0])
        );
        for ir in ["\"x\"", "W/\"abc\"", "Wed, 21 Oct 2015 07:28:00 GMT", ""] {
            assert_eq!(
                evaluate(&c(&[], Some(ir)), TAG, 10, 1),
                Answer::Full,
                "{ir:?}"
            );
        }
    }

    #[test]
    fn from_headers() {
        let mut h = HeaderMap::new();
        h.append(header::RANGE, "bytes=0-1".parse().unwrap());
        assert_eq!(Conditions::from_headers(&h).range, Some("bytes=0-1"));
        h.append(header::RANGE, "bytes=2-3".parse().unwrap());
        assert_eq!(
            evaluate(&Conditions::from_headers(&h), TAG, 10, 4),
            Answer::Full
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_RANGE,
            http::HeaderValue::from_bytes(b"\"\xff\"").unwrap(),
        );
        h.insert(header::RANGE, "bytes=0-1".parse().unwrap());
        assert_eq!(
            evaluate(&Conditions::from_headers(&h), TAG, 10, 4),
            Answer::Full
        );
    }

    proptest! {
        #[test]
        fn partial_ranges_are_inside_and_disjoint(s in "bytes=[0-9,\\- ]{0,40}", size in 0u64..2000) {
            if let Answer::Partial(v) = ask(&s, size) {
                prop_assert!(!v.is_empty());
                let mut sorted = v.clone();
                sorted.sort_by_key(|r| *r.start());
                for r in &v {
                    prop_assert!(r.start() <= r.end() && *r.end() < size);
                }
                for w in sorted.windows(2) {
                    prop_assert!(*w[1].start() > w[0].end() + 1);
                }
            }
        }

        #[test]
        fn never_panics(s in ".{0,60}", size in any::<u64>()) {
            let _ = ask(&s, size);
        }
    }
}
