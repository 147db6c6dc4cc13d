//! SOAP 1.1 and 1.2 envelopes: read (any prefix; the optional Header and
//! the Body's first element) and written (`soap:` prefix, `xsi` and `xsd`
//! declared, as .NET web services write them).

use super::xml::{Element, Limits, XmlError, parse_document};
use super::{Fault, SoapVersion, XSD_NS, XSI_NS};

/// A read SOAP envelope: its version, its Header (if any) and the first
/// element of its Body (an operation's request or response, or a Fault).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub version: SoapVersion,
    pub header: Option<Element>,
    pub body: Element,
}

/// Why a SOAP message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("the document element is {0}, not a SOAP 1.1 or 1.2 Envelope")]
    NotAnEnvelope(String),
    #[error("the envelope has no Body element")]
    NoBody,
    #[error("the Body is empty")]
    EmptyBody,
}

impl Envelope {
    /// Reads a SOAP 1.1 or 1.2 envelope within `limits`.
    pub fn read(bytes: &[u8], limits: &Limits) -> Result<Envelope, EnvelopeError> {
        Self::from_root(parse_document(bytes, limits)?)
    }

    /// The envelope of an already read document element.
    pub fn from_root(root: Element) -> Result<Envelope, EnvelopeError> {
        let version = match root.ns().and_then(SoapVersion::from_envelope_ns) {
            Some(v) if root.name() == "Envelope" => v,
            _ => return Err(EnvelopeError::NotAnEnvelope(root.qualified_name())),
        };
        let ns = version.envelope_ns();
        let mut header = None;
        let mut body = None;
        for child in root.into_children() {
            if child.ns() != Some(ns) {
                continue;
            }
            match child.name() {
                "Header" if header.is_none() && body.is_none() => header = Some(child),
                "Body" if body.is_none() => body = Some(child),
                _ => {}
            }
        }
        let body = body
            .ok_or(EnvelopeError::NoBody)?
            .into_children()
            .into_iter()
            .next()
            .ok_or(EnvelopeError::EmptyBody)?;
        Ok(Envelope {
            version,
            header,
            body,
        })
    }

    /// The fault the Body carries, when it is one.
    pub fn fault(&self) -> Option<Fault> {
        Fault::read(&self.body, self.version)
    }
}

/// A whole SOAP message around `body` (the Body's content, already
/// written).
pub fn envelope(version: SoapVersion, body: &str) -> String {
    envelope_with_header(version, None, body)
}

/// [`envelope`] with a Header holding `header` (already written).
pub fn envelope_with_header(version: SoapVersion, header: Option<&str>, body: &str) -> String {
    let header = header
        .map(|h| format!("<soap:Header>{h}</soap:Header>"))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"{}\" xmlns:xsi=\"{XSI_NS}\" xmlns:xsd=\"{XSD_NS}\">{header}<soap:Body>{body}</soap:Body></soap:Envelope>",
        version.envelope_ns()
    )
}

/// A SOAP 1.1 message around `body` as WCF writes it (`s:` prefix, no
/// XML declaration, the schema namespaces on the Body): how Windows WSUS's
/// client web service answers.
pub fn envelope_wcf(body: &str) -> String {
    format!(
        "<s:Envelope xmlns:s=\"{}\"><s:Body xmlns:xsi=\"{XSI_NS}\" xmlns:xsd=\"{XSD_NS}\">{body}</s:Body></s:Envelope>",
        SoapVersion::V11.envelope_ns()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::{SOAP11_ENV, SOAP12_ENV};

    fn read(s: &str) -> Result<Envelope, EnvelopeError> {
        Envelope::read(s.as_bytes(), &Limits::REQUEST)
    }

    #[test]
    fn reads_header_and_body_with_any_prefix() {
        let m = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"{SOAP11_ENV}\"><s:Header><x/></s:Header>\
             <s:Body><Op xmlns=\"urn:op\"><a>1</a></Op><Second/></s:Body></s:Envelope>"
        );
        let e = read(&m).unwrap();
        assert_eq!(e.version, SoapVersion::V11);
        assert!(e.body.is("urn:op", "Op"));
        assert_eq!(e.body.child_text("a"), Some("1"));
        assert_eq!(e.header.unwrap().children()[0].name(), "x");
        let m12 = envelope_with_header(SoapVersion::V12, Some("<h/>"), "<Op xmlns=\"urn:op\"/>");
        let e = read(&m12).unwrap();
        assert_eq!(e.version, SoapVersion::V12);
        assert!(e.body.is("urn:op", "Op"));
        assert!(e.header.is_some());
        assert!(m12.contains(&format!("xmlns:soap=\"{SOAP12_ENV}\"")));
    }

    #[test]
    fn refuses_what_is_no_envelope() {
        for (m, want) in [
            ("<a/>", "not a SOAP"),
            ("<!DOCTYPE x [<!ENTITY a 'b'>]><x/>", "DTD"),
            (
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>",
                "truncated",
            ),
            (
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"></soap:Envelope>",
                "no Body",
            ),
            (
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><Body><x/></Body></soap:Envelope>",
                "no Body",
            ),
            (
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body></soap:Body></soap:Envelope>",
                "empty",
            ),
            (
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><a>&foo;</a></soap:Body></soap:Envelope>",
                "malformed",
            ),
            ("<x:Envelope><x:Body/></x:Envelope>", "malformed"),
        ] {
            let e = read(m).unwrap_err();
            assert!(e.to_string().contains(want), "{m}: {e}");
        }
        let deep = format!(
            "<soap:Envelope xmlns:soap=\"{SOAP11_ENV}\"><soap:Body>{}{}</soap:Body></soap:Envelope>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert_eq!(
            read(&deep).unwrap_err(),
            EnvelopeError::Xml(XmlError::TooDeep(64))
        );
    }
}
