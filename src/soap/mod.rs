//! SOAP, once, for every WSUS protocol and both directions: what a server
//! reads from its clients and writes back (MS-WSUSSS upstream handlers;
//! MS-WUSP next), and what the downstream client writes to its upstream
//! and reads back. No protocol's operations live here: each protocol
//! keeps its own `Operation` type (`protocols::wsusss::messages`).
//!
//! - [`xml`]: the element tree ([`Element`]), its bounded reader
//!   ([`parse_document`], [`Limits`] per direction), [`escape`] and the
//!   body writer ([`XmlWriter`]).
//! - [`Envelope`]: SOAP 1.1 and 1.2 envelopes, read ([`Envelope::read`]:
//!   any prefix, `s:` or `soap:`; Header and Body) and written
//!   ([`envelope`]), document/literal as .NET web services write them.
//! - [`Fault`]: one fault type for both sides: a server writes it with
//!   the WSUS detail (`ErrorCode`, `Message`, `ID`, `Method`: MS-WSUSSS
//!   2.2.9, MS-WUSP 2.2.2.4), a client reads it from either SOAP version.
//!   [`Refusal`] is a server's fault with the reason it logs.
//! - SOAP over HTTP: [`request_binding`] (version and SOAPAction of a
//!   request's headers), [`action_names`], [`content_type`].
//! - [`xsd`]: `xsd:boolean` and `xsd:dateTime`.
//! - [`cab`]: the Cabinet/LZX blobs WSUS wraps long update documents in.
//! - [`cookie`]: the MAC that makes a server's cookies opaque and
//!   unforgeable.

pub mod cab;
pub mod cookie;
mod envelope;
mod fault;
pub mod xml;
pub mod xsd;

pub use envelope::{Envelope, EnvelopeError, envelope, envelope_with_header};
pub use fault::{CommonCode, Fault, FaultCode, Refusal};
pub use xml::{Element, Limits, XmlError, XmlWriter, escape, escape_attribute, parse_document};
pub use xsd::parse_bool;

/// SOAP 1.1 envelope namespace.
pub const SOAP11_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const SOAP12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
/// XML Schema instance namespace (`xsi:nil`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// XML Schema namespace.
pub const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// SOAP 1.1 or 1.2, told apart by the envelope namespace (and, over HTTP,
/// by the Content-Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    pub fn envelope_ns(self) -> &'static str {
        match self {
            SoapVersion::V11 => SOAP11_ENV,
            SoapVersion::V12 => SOAP12_ENV,
        }
    }
    /// The version whose envelope namespace this is.
    pub fn from_envelope_ns(ns: &str) -> Option<SoapVersion> {
        match ns {
            SOAP11_ENV => Some(SoapVersion::V11),
            SOAP12_ENV => Some(SoapVersion::V12),
            _ => None,
        }
    }
    /// The HTTP Content-Type of a message.
    pub fn content_type(self) -> &'static str {
        match self {
            SoapVersion::V11 => "text/xml; charset=utf-8",
            SoapVersion::V12 => "application/soap+xml; charset=utf-8",
        }
    }
}

/// The Content-Type of a request: SOAP 1.2 carries its action in it,
/// SOAP 1.1 in the SOAPAction header ([`soap_action_header`]).
pub fn content_type(version: SoapVersion, action: &str) -> String {
    match version {
        SoapVersion::V11 => SoapVersion::V11.content_type().to_string(),
        SoapVersion::V12 => format!("{}; action=\"{action}\"", SoapVersion::V12.content_type()),
    }
}

/// The SOAPAction header of a SOAP 1.1 request (quoted, as .NET sends it).
pub fn soap_action_header(action: &str) -> String {
    format!("\"{action}\"")
}

/// The SOAP version and action a request's HTTP headers announce: SOAP
/// 1.2 by `application/soap+xml` (the action in its `action` parameter),
/// else SOAP 1.1 with the `SOAPAction` header. Quotes are removed; an
/// empty action is none.
pub fn request_binding(
    content_type: Option<&str>,
    soap_action: Option<&str>,
) -> (SoapVersion, Option<String>) {
    let ct = content_type.unwrap_or("");
    let clean =
        |a: &str| Some(a.trim().trim_matches('"').trim().to_string()).filter(|a| !a.is_empty());
    if ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/soap+xml")
    {
        let action = ct.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("action").then(|| clean(v))?
        });
        (SoapVersion::V12, action)
    } else {
        (SoapVersion::V11, soap_action.and_then(clean))
    }
}

/// Whether a SOAPAction a client sent (quotes and white space around it
/// ignored) names `action`.
pub fn action_names(sent: &str, action: &str) -> bool {
    sent.trim().trim_matches('"').trim() == action
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_from_headers() {
        assert_eq!(
            request_binding(Some("text/xml; charset=utf-8"), Some("\"urn:a\"")),
            (SoapVersion::V11, Some("urn:a".into()))
        );
        assert_eq!(
            request_binding(
                Some("application/soap+xml; charset=utf-8; action=\"urn:b\""),
                Some("urn:ignored")
            ),
            (SoapVersion::V12, Some("urn:b".into()))
        );
        assert_eq!(
            request_binding(Some("Application/SOAP+xml"), None),
            (SoapVersion::V12, None)
        );
        assert_eq!(
            request_binding(None, Some("\"\"")),
            (SoapVersion::V11, None)
        );
        assert_eq!(request_binding(None, None), (SoapVersion::V11, None));
        // What a client sends reads back as the same binding.
        for v in [SoapVersion::V11, SoapVersion::V12] {
            let header = soap_action_header("urn:c");
            let got = request_binding(Some(&content_type(v, "urn:c")), Some(&header));
            assert_eq!(got, (v, Some("urn:c".into())));
        }
        assert!(action_names(" \"urn:a\" ", "urn:a"));
        assert!(!action_names("urn:ab", "urn:a"));
        for v in [SoapVersion::V11, SoapVersion::V12] {
            assert_eq!(SoapVersion::from_envelope_ns(v.envelope_ns()), Some(v));
        }
        assert_eq!(SoapVersion::from_envelope_ns("urn:x"), None);
    }
}
