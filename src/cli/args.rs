//! Value parsers for flags: every value is read and checked while the
//! command line is parsed, before any work. A refusal is clap's usage
//! error (exit 2), which names the flag and the value; the text here says
//! why and what is allowed.

use gapsync::model::units::{
    self, MAX_EXPIRES, MAX_GENERATED_CONTENT, MIN_EXPIRES, MIN_VOLUME_SIZE, SHORT_EXPIRES,
};
use gapsync::store::journal::Anchor;

/// `export --expires`: a duration between 1 minute and 10 years.
pub fn expires(s: &str) -> Result<time::Duration, String> {
    units::duration_in(s, MIN_EXPIRES, MAX_EXPIRES)
}

/// `export --volume-size`: at least [`MIN_VOLUME_SIZE`] (each volume keeps
/// 1 MiB for its manifest, sums and signature, and needs room for a 1 MiB
/// part of a content file).
pub fn volume_size(s: &str) -> Result<u64, String> {
    units::size_in(s, MIN_VOLUME_SIZE, u64::MAX).map_err(|why| {
        format!(
            "{why}; each volume keeps 1 MiB for its manifest and sums and needs 1 MiB for content"
        )
    })
}

/// `--content-bytes` of `catalog generate` and `demo`.
pub fn content_bytes(s: &str) -> Result<u64, String> {
    units::size_in(s, 0, MAX_GENERATED_CONTENT)
}

/// `approve --deadline`: an RFC 3339 date and time, kept in UTC.
pub fn deadline(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
        .map_err(|_| "not an RFC 3339 date and time (e.g. 2026-12-01T18:00:00Z)".to_string())
}

/// `events list --since`: an RFC 3339 date and time, or a duration back
/// from now (`24h`, `7d`).
pub fn since(s: &str) -> Result<time::OffsetDateTime, String> {
    if let Ok(t) = deadline(s) {
        return Ok(t);
    }
    let back = units::duration_in(s, time::Duration::ZERO, time::Duration::days(36_500)).map_err(
        |why| format!("neither an RFC 3339 date and time (e.g. 2026-12-01T18:00:00Z) nor a duration back from now ({why})"),
    )?;
    time::OffsetDateTime::now_utc()
        .checked_sub(back)
        .ok_or_else(|| "too far back".to_string())
}

/// An anchor (`journal --since`, `export --since`): `gapsync1:<server
/// id>:<sequence>`, the server id with or without hyphens.
pub fn anchor(s: &str) -> Result<Anchor, String> {
    s.parse::<Anchor>().map_err(|e| match e {
        gapsync::Error::BadAnchor { why, .. } => why,
        other => other.to_string(),
    })
}

/// A GUID (update ids, `--product`, `--classification`), canonicalised
/// (lower case, hyphenated; braces and upper case accepted).
pub fn guid(s: &str) -> Result<String, String> {
    gapsync::store::canonical_guid(s)
        .ok_or_else(|| "not a GUID (e.g. 0fa1201d-4330-4fa8-8ae9-b877473b6441)".to_string())
}

/// `config set targeting`: where clients' target groups come from.
pub fn targeting(s: &str) -> Result<gapsync::store::wusp::Targeting, String> {
    gapsync::store::wusp::Targeting::parse(s)
        .ok_or_else(|| "not a targeting mode; allowed: server, client".to_string())
}

/// `export --to`: a destination name.
pub fn destination(s: &str) -> Result<String, String> {
    gapsync::airgap::export::check_destination_name(s)
        .map(|()| s.to_string())
        .map_err(|_| "must be 1-128 printable characters".to_string())
}

/// Warns (stderr) about a deadline that has passed: legal, but clients
/// then install at once.
pub fn warn_past_deadline(deadline: &time::OffsetDateTime, text: &str) {
    if *deadline < time::OffsetDateTime::now_utc() {
        eprintln!(
            "gapsync: warning: --deadline {text} is in the past: clients will install the update at once"
        );
    }
}

/// Warns (stderr) about a validity period shorter than an hour.
pub fn warn_short_expiry(expires: time::Duration) {
    if expires < SHORT_EXPIRES {
        eprintln!(
            "gapsync: warning: --expires {}: the bundle must be imported within {} of now (importers allow 5 minutes of clock difference)",
            units::duration_text(expires),
            units::duration_text(expires)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_say_why_and_the_range() {
        assert!(expires("99999999w").unwrap_err().contains("3650d"));
        assert!(
            expires("99999999999999999w")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(volume_size("1K").unwrap_err().contains("2101248 bytes"));
        assert_eq!(volume_size("4M").unwrap(), 4 << 20);
        assert!(content_bytes("100T").unwrap_err().contains("16T"));
        assert!(deadline("tomorrow").is_err());
        assert_eq!(
            deadline("2026-12-01T20:00:00+02:00").unwrap(),
            time::macros::datetime!(2026-12-01 18:00 UTC)
        );
        assert!(anchor("gapsync1:x:1").unwrap_err().contains("GUID"));
        assert_eq!(
            guid("{0FA1201D-4330-4FA8-8AE9-B877473B6441}").unwrap(),
            "0fa1201d-4330-4fa8-8ae9-b877473b6441"
        );
        assert!(guid("KB123").is_err());
        assert!(destination("").is_err());
        assert!(destination("a\u{7}").is_err());
        assert_eq!(destination("plant").unwrap(), "plant");
    }
}
