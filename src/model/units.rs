//! Sizes and durations as admins type them (`700M`, `4G`, `25GiB`, `1024`;
//! `30d`, `12h`, `2w`), and the ranges the commands accept for them. One
//! place, so every flag reads and bounds them alike.
//!
//! The `*_in` functions return the reason alone (no value), for the
//! command line's parsers, which name the flag and the value themselves;
//! [`parse_size`] and [`parse_duration`] wrap it with the value.

use crate::error::{Error, Result};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;

/// Space kept free in every volume for manifest, SHA256SUMS and signature.
pub const VOLUME_RESERVE: u64 = MIB;
/// Smallest part a content file is split into (except its last part).
pub const MIN_PART: u64 = MIB;
/// Smallest `--volume-size`: the reserve, one smallest part, and its tar
/// header, padding and end blocks (rounded up to 4 KiB), so that any
/// content file can be placed (split where needed) in an empty volume.
pub const MIN_VOLUME_SIZE: u64 = VOLUME_RESERVE + MIN_PART + 4 * KIB;
/// Largest `--content-bytes` of `catalog generate` and `demo` (a synthetic
/// catalog; the free space of the store's disk is a separate limit).
pub const MAX_GENERATED_CONTENT: u64 = 16 * TIB;

/// Shortest `export --expires`.
pub const MIN_EXPIRES: time::Duration = time::Duration::minutes(1);
/// Longest `export --expires`: ten years (3650 days).
pub const MAX_EXPIRES: time::Duration = time::Duration::days(3650);
/// `export --expires` below this is legal but probably a mistake (the
/// bundle must reach and be imported on the other side within it).
pub const SHORT_EXPIRES: time::Duration = time::Duration::hours(1);

/// Reads a byte size. Suffixes K, M, G, T (optionally followed by `i`, `B`
/// or `iB`) are binary multiples (1K = 1024), as media sizes are usually
/// meant here; a bare number is bytes. Returns the reason on failure.
pub fn size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err("expected a number such as 700M, 4G or 1048576".into());
    }
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KI" | "KIB" => 10,
        "M" | "MB" | "MI" | "MIB" => 20,
        "G" | "GB" | "GI" | "GIB" => 30,
        "T" | "TB" | "TI" | "TIB" => 40,
        _ => return Err("unknown unit (use K, M, G or T)".into()),
    };
    let out_of_range = || OUT_OF_RANGE.to_string();
    if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| "not a number".to_string())?;
        let bytes = v * (1u64 << shift) as f64;
        // 2^64 is the first f64 above u64::MAX's range (NaN and infinities
        // are outside the range too).
        if !(0.0..18_446_744_073_709_551_616.0).contains(&bytes) {
            return Err(out_of_range());
        }
        Ok(bytes.round() as u64)
    } else {
        let v: u64 = num
            .parse()
            .map_err(|e: std::num::ParseIntError| match e.kind() {
                std::num::IntErrorKind::PosOverflow => out_of_range(),
                _ => "not a number".to_string(),
            })?;
        v.checked_mul(1u64 << shift).ok_or_else(out_of_range)
    }
}

/// A size within `min..=max`; the reason names the range.
pub fn size_in(s: &str, min: u64, max: u64) -> std::result::Result<u64, String> {
    let range = if max == u64::MAX {
        format!("the minimum is {}", size_text(min))
    } else {
        format!("allowed between {} and {}", size_text(min), size_text(max))
    };
    match size(s) {
        Ok(v) if v >= min && v <= max => Ok(v),
        Ok(_) => Err(format!("{OUT_OF_RANGE}: {range}")),
        Err(why) if why == OUT_OF_RANGE => Err(format!("{OUT_OF_RANGE}: {range}")),
        Err(why) => Err(format!("{why}; {range}")),
    }
}

const OUT_OF_RANGE: &str = "out of range";

/// Parses a byte size (see [`size`]); the error names the value.
pub fn parse_size(s: &str) -> Result<u64> {
    size(s).map_err(|why| Error::invalid("size", format!("{s:?}: {why}")))
}

/// Reads a duration: a whole number followed by `s`, `m`, `h`, `d` or `w`
/// (seconds, minutes, hours, days, weeks); a bare number is days. Returns
/// the reason on failure (never panics, whatever the number).
pub fn duration(s: &str) -> std::result::Result<time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err("expected a whole number and a unit, e.g. 30d, 12h, 90m, 2w".into());
    }
    let unit_secs: i64 = match unit {
        "" | "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        "w" => 7 * 86_400,
        _ => return Err(format!("unknown unit {unit:?} (use s, m, h, d or w)")),
    };
    let n: i64 = num.parse().map_err(|_| OUT_OF_RANGE.to_string())?;
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| OUT_OF_RANGE.to_string())?;
    Ok(time::Duration::seconds(secs))
}

/// A duration within `min..=max`; the reason names the range.
pub fn duration_in(
    s: &str,
    min: time::Duration,
    max: time::Duration,
) -> std::result::Result<time::Duration, String> {
    let range = format!(
        "allowed between {} and {}",
        duration_text(min),
        duration_text(max)
    );
    match duration(s) {
        Ok(d) if d >= min && d <= max => Ok(d),
        Ok(_) => Err(format!("{OUT_OF_RANGE}: {range}")),
        Err(why) if why == OUT_OF_RANGE => Err(format!("{OUT_OF_RANGE}: {range}")),
        Err(why) => Err(format!("{why}; {range}")),
    }
}

/// Parses a duration (see [`duration`]); the error names the value.
pub fn parse_duration(s: &str) -> Result<time::Duration> {
    duration(s).map_err(|why| Error::invalid("duration", format!("{s:?}: {why}")))
}

/// A duration as it would be typed, in its largest exact unit: `3650d`,
/// `12h`, `90s`.
pub fn duration_text(d: time::Duration) -> String {
    let s = d.whole_seconds();
    for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s != 0 && s % secs == 0 {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

/// A size exactly, as typed and in bytes: `2052K (2101248 bytes)`.
fn size_text(n: u64) -> String {
    for (unit, mult) in [("T", TIB), ("G", 1 << 30), ("M", MIB), ("K", KIB)] {
        if n != 0 && n.is_multiple_of(mult) {
            return format!("{}{unit} ({n} bytes)", n / mult);
        }
    }
    format!("{n} bytes")
}

/// A count with its noun in the right number: `count(1, "computer")` is
/// "1 computer", `count(2, "category")` "2 categories" (English regular
/// plurals; nouns only).
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    let consonant_y = noun.len() > 1
        && noun.ends_with('y')
        && !noun[..noun.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
    if consonant_y {
        format!("{n} {}ies", &noun[..noun.len() - 1])
    } else if noun.ends_with(['s', 'x']) || noun.ends_with("ch") || noun.ends_with("sh") {
        format!("{n} {noun}es")
    } else {
        format!("{n} {noun}s")
    }
}

/// Formats bytes for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("700M").unwrap(), 700 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("25GiB").unwrap(), 25u64 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("0").unwrap(), 0);
        for bad in [
            "",
            "M",
            "12X",
            "-1",
            "99999999999999999999T",
            "1e9",
            "16777216T",
            "99999999999999999999.0T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(size("99999999999999999999").unwrap_err(), "out of range");
    }

    #[test]
    fn sizes_in_ranges() {
        assert_eq!(
            size_in("1K", MIN_VOLUME_SIZE, u64::MAX).unwrap_err(),
            "out of range: the minimum is 2052K (2101248 bytes)"
        );
        assert_eq!(size_in("3M", MIN_VOLUME_SIZE, u64::MAX).unwrap(), 3 << 20);
        assert_eq!(
            size_in("17T", 0, MAX_GENERATED_CONTENT).unwrap_err(),
            "out of range: allowed between 0 bytes and 16T (17592186044416 bytes)"
        );
        assert!(
            size_in("x", 0, 10)
                .unwrap_err()
                .contains("; allowed between")
        );
        assert_eq!(
            size_in("99999999999999999999", 0, 10).unwrap_err(),
            "out of range: allowed between 0 bytes and 10 bytes"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), Duration::days(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::days(30));
        assert_eq!(parse_duration("12h").unwrap(), Duration::hours(12));
        assert_eq!(parse_duration("90m").unwrap(), Duration::minutes(90));
        assert_eq!(parse_duration("2w").unwrap(), Duration::weeks(2));
        assert_eq!(parse_duration("0d").unwrap(), Duration::ZERO);
        for bad in ["soon", "", "d", "-1d", "1.5d", "1y", "12 h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        // Never a panic, however large.
        for huge in [
            "99999999w",
            "3000000d",
            "99999999999999999w",
            "9223372036854775807s",
            "9223372036854775808s",
            "99999999999999999999999999d",
        ] {
            let _ = duration(huge);
            assert!(
                duration_in(huge, MIN_EXPIRES, MAX_EXPIRES).is_err(),
                "{huge}"
            );
        }
        assert_eq!(
            duration_in("99999999w", MIN_EXPIRES, MAX_EXPIRES).unwrap_err(),
            "out of range: allowed between 1m and 3650d"
        );
        assert_eq!(
            duration_in("99999999999999999w", MIN_EXPIRES, MAX_EXPIRES).unwrap_err(),
            "out of range: allowed between 1m and 3650d"
        );
        assert!(duration_in("59s", MIN_EXPIRES, MAX_EXPIRES).is_err());
        assert!(duration_in("0d", MIN_EXPIRES, MAX_EXPIRES).is_err());
        assert_eq!(
            duration_in("3650d", MIN_EXPIRES, MAX_EXPIRES).unwrap(),
            MAX_EXPIRES
        );
        assert_eq!(
            duration_in("1m", MIN_EXPIRES, MAX_EXPIRES).unwrap(),
            MIN_EXPIRES
        );
    }

    proptest::proptest! {
        /// Any typed duration within the range is accepted and the bounds
        /// hold for whatever is accepted.
        #[test]
        fn durations_never_panic_and_respect_the_range(n in proptest::num::u64::ANY, unit in "[smhdw]?") {
            let s = format!("{n}{unit}");
            if let Ok(d) = duration_in(&s, MIN_EXPIRES, MAX_EXPIRES) {
                proptest::prop_assert!(d >= MIN_EXPIRES && d <= MAX_EXPIRES);
            }
        }
    }

    #[test]
    fn duration_texts() {
        assert_eq!(duration_text(Duration::days(3650)), "3650d");
        assert_eq!(duration_text(Duration::minutes(1)), "1m");
        assert_eq!(duration_text(Duration::seconds(90)), "90s");
        assert_eq!(duration_text(Duration::hours(12)), "12h");
    }

    #[test]
    fn counts_read_correctly() {
        assert_eq!(count(1, "computer"), "1 computer");
        assert_eq!(count(0, "computer"), "0 computers");
        assert_eq!(count(2, "category"), "2 categories");
        assert_eq!(count(2, "key"), "2 keys");
        assert_eq!(count(3, "bundle"), "3 bundles");
        assert_eq!(count(4, "anchor reset"), "4 anchor resets");
        assert_eq!(count(5, "content file"), "5 content files");
        assert_eq!(count(6, "match"), "6 matches");
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
