//! Sync anchors: a point of one server's change journal, written
//! `gapsync1:<server id, 32 lower-case hex digits>:<sequence>`. Opaque to
//! other servers; the journal (`store::journal`) hands them out and reads
//! them back.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::error::{Error, Result};

const ANCHOR_PREFIX: &str = "gapsync1";

/// A point in one server's change journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Anchor {
    pub server_id: Uuid,
    pub seq: i64,
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ANCHOR_PREFIX}:{}:{}",
            self.server_id.simple(),
            self.seq
        )
    }
}

impl FromStr for Anchor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadAnchor {
            anchor: s.chars().take(200).collect(),
            why: why.to_string(),
        };
        let mut parts = s.split(':');
        let (Some(prefix), Some(id), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not of the form gapsync1:<server>:<sequence>"));
        };
        if prefix != ANCHOR_PREFIX {
            return Err(bad("unknown anchor format"));
        }
        let server_id = parse_server_id(id).ok_or_else(|| {
            bad("server id is not a GUID (32 hex digits, with or without hyphens)")
        })?;
        if seq.starts_with('-') {
            return Err(bad("sequence is negative"));
        }
        if seq.is_empty() || !seq.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("sequence is not a number"));
        }
        let seq: i64 = seq
            .parse()
            .map_err(|_| bad(&format!("sequence is out of range (at most {})", i64::MAX)))?;
        Ok(Anchor { server_id, seq })
    }
}

/// A server id as `status` prints it (hyphenated GUID) or as anchors carry
/// it (32 hex digits), in either case.
pub fn parse_server_id(s: &str) -> Option<Uuid> {
    match s.len() {
        32 | 36 => Uuid::try_parse(s).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_round_trips() {
        let a = Anchor {
            server_id: Uuid::new_v4(),
            seq: 42,
        };
        let s = a.to_string();
        assert!(s.starts_with("gapsync1:"));
        assert_eq!(s.parse::<Anchor>().unwrap(), a);
    }

    proptest::proptest! {
        #[test]
        fn anchors_round_trip(id in proptest::array::uniform16(0u8..), seq in 0i64..i64::MAX) {
            let a = Anchor { server_id: Uuid::from_bytes(id), seq };
            proptest::prop_assert_eq!(a.to_string().parse::<Anchor>().unwrap(), a);
        }

        #[test]
        fn anchor_parser_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Anchor>();
        }
    }

    #[test]
    fn bad_anchors_are_named() {
        for s in [
            "",
            "gapsync1",
            "gapsync2:00000000000000000000000000000000:1",
            "gapsync1:zz:1",
            "gapsync1:00000000000000000000000000000000:-1",
            "gapsync1:00000000000000000000000000000000:x",
            "gapsync1:00000000000000000000000000000000:1:2",
        ] {
            let e = s.parse::<Anchor>().unwrap_err();
            assert!(matches!(e, Error::BadAnchor { .. }), "{s}: {e}");
        }
    }

    #[test]
    fn anchors_take_the_server_id_as_status_prints_it() {
        let a = Anchor {
            server_id: Uuid::new_v4(),
            seq: 7,
        };
        for id in [
            a.server_id.simple().to_string(),
            a.server_id.hyphenated().to_string(),
            a.server_id.hyphenated().to_string().to_uppercase(),
        ] {
            assert_eq!(format!("gapsync1:{id}:7").parse::<Anchor>().unwrap(), a);
        }
        let braced = format!("gapsync1:{}:7", a.server_id.braced());
        assert!(braced.parse::<Anchor>().is_err());
    }

    #[test]
    fn a_sequence_too_large_is_out_of_range_not_a_non_number() {
        let id = "0".repeat(32);
        let e = format!("gapsync1:{id}:99999999999999999999")
            .parse::<Anchor>()
            .unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = format!("gapsync1:{id}:+5").parse::<Anchor>().unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
        assert_eq!(
            format!("gapsync1:{id}:{}", i64::MAX)
                .parse::<Anchor>()
                .unwrap()
                .seq,
            i64::MAX
        );
    }
}
