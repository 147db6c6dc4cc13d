//! The SOAP layer (`gapsync::soap`) on arbitrary bytes: what a server
//! reads from any client (`Limits::REQUEST`) and what the downstream
//! client reads from a hostile upstream (`Limits::ANSWER`) never panics;
//! a fault read writes back as the same fault; any text escaped reads
//! back as itself without the characters XML 1.0 forbids; a Cabinet blob
//! is read or refused, never a panic.
#![no_main]
use gapsync::soap::{self, Envelope, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::REQUEST, Limits::ANSWER] {
        let Ok(env) = Envelope::read(data, &limits) else {
            continue;
        };
        if let Some(f) = env.fault() {
            let again = Envelope::read(f.to_envelope(env.version).as_bytes(), &limits)
                .expect("a written fault reads back");
            let g = again.fault().expect("still a fault");
            assert_eq!(g.sender, f.sender);
            assert_eq!((&g.message, &g.id, &g.method), (&f.message, &f.id, &f.method));
            assert_eq!((&g.reason, &g.actor), (&f.reason, &f.actor));
            if f.error_code.is_some() {
                assert_eq!(g.error_code, f.error_code);
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let doc = format!("<a b=\"{}\">{}</a>", soap::escape_attribute(s), soap::escape(s));
        let back = soap::xml::parse_str(&doc, &Limits::ANSWER).expect("escaped text reads back");
        let want: String = s.chars().filter(|&c| soap::xml::is_xml_char(c)).collect();
        assert_eq!(back.text(), want);
    }
    let _ = soap::cab::read_single_member(data, 1 << 20);
});
