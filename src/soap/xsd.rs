//! The XML Schema scalar types the WSUS messages carry, read and written
//! in one place: `xsd:boolean`, `xsd:dateTime`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Reads an `xsd:boolean`: `true`, `false`, `1`, `0`, white space around
/// them ignored (the type's `whiteSpace` facet is "collapse").
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Writes an `xsd:boolean` as .NET does (`true`, `false`).
pub fn format_bool(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Reads an `xsd:dateTime` as Windows WSUS writes it
/// (`2026-10-04T20:33:26.65455Z`: up to 7 fraction digits, an offset or
/// `Z`); one without an offset is read as UTC.
pub fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339).ok()
}

/// Writes a unix time as an `xsd:dateTime` in UTC (`...Z`).
pub fn format_unix(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for (s, b) in [
            ("true", true),
            (" 1 ", true),
            ("false", false),
            ("0", false),
        ] {
            assert_eq!(parse_bool(s), Some(b), "{s:?}");
        }
        for s in ["", "True", "yes", "2", "t"] {
            assert_eq!(parse_bool(s), None, "{s:?}");
        }
        assert_eq!(parse_bool(format_bool(true)), Some(true));
        assert_eq!(parse_bool(format_bool(false)), Some(false));
    }

    #[test]
    fn date_times() {
        let t = parse_datetime("2026-10-04T20:33:26.65455Z").unwrap();
        assert_eq!(t.unix_timestamp(), 1_791_146_006);
        assert_eq!(
            parse_datetime("9999-12-31T23:59:59.9999999").map(|t| t.year()),
            Some(9999)
        );
        assert_eq!(
            parse_datetime("2026-01-01T01:00:00+01:00").map(|t| t.unix_timestamp()),
            parse_datetime("2026-01-01T00:00:00Z").map(|t| t.unix_timestamp())
        );
        assert_eq!(parse_datetime("yesterday"), None);
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            parse_datetime(&format_unix(1_791_146_006)).map(|t| t.unix_timestamp()),
            Some(1_791_146_006)
        );
    }
}
