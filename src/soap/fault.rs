//! SOAP faults as the WSUS web services write them (MS-WSUSSS 2.2.9,
//! MS-WUSP 2.2.2.4): SOAP 1.1 `faultcode`, `faultstring`, `faultactor`
//! and `detail`; SOAP 1.2 `Code/Value`, `Reason/Text`, `Node` and an
//! unqualified `Detail`. The detail holds the unqualified `ErrorCode`,
//! `Message` (for InvalidParameters the parameter's name), `ID` (a fresh
//! GUID per fault, also in the server's log line) and `Method` (the
//! operation's SOAPAction in quotes), as Windows WSUS writes them.

use std::fmt;

use serde::Serialize;
use uuid::Uuid;

use super::xml::{Element, XmlWriter, escape};
use super::{SoapVersion, envelope};

/// `faultstring` / `Reason/Text` of every fault a WSUS server writes.
pub const FAULT_REASON: &str = "Fault occurred";

/// An ErrorCode of one protocol (each protocol has its own enum).
pub trait FaultCode: Copy {
    /// The ErrorCode text (case-sensitive).
    fn as_str(self) -> &'static str;
    /// Whether the fault blames the request (`soap:Client` /
    /// `soap:Sender`) rather than the server.
    fn blames_sender(self) -> bool;
}

/// The ErrorCodes every WSUS web service shares (MS-WSUSSS 2.2.9.3,
/// MS-WUSP 2.2.2.4), which a server answers before a request reaches a
/// protocol: an unreadable message, an unknown operation or a SOAPAction
/// of another one, an oversized body (InvalidParameters); a failed
/// handler (InternalServerError); no capacity (ServerBusy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommonCode {
    InvalidParameters,
    InternalServerError,
    ServerBusy,
}

impl FaultCode for CommonCode {
    fn as_str(self) -> &'static str {
        match self {
            CommonCode::InvalidParameters => "InvalidParameters",
            CommonCode::InternalServerError => "InternalServerError",
            CommonCode::ServerBusy => "ServerBusy",
        }
    }
    fn blames_sender(self) -> bool {
        self == CommonCode::InvalidParameters
    }
}

/// A SOAP fault: written by a server, read by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// `soap:Client` / `soap:Sender` (true) or `Server` / `Receiver`.
    pub sender: bool,
    /// `faultcode` (SOAP 1.1) or `Code/Value` (SOAP 1.2) as read.
    pub fault_code: String,
    /// `faultstring` (SOAP 1.1) or `Reason/Text` (SOAP 1.2).
    pub reason: String,
    /// `faultactor` (SOAP 1.1) or `Node` (SOAP 1.2): the service's URL.
    pub actor: Option<String>,
    /// `ErrorCode`, when present (InvalidCookie, ServerChanged, ...).
    pub error_code: Option<String>,
    /// `Message` (empty when absent).
    pub message: String,
    /// `ID`: the fault instance.
    pub id: Option<String>,
    /// `Method`: the SOAPAction of the failed operation, without quotes.
    pub method: Option<String>,
}

impl Fault {
    /// A fault to write: `code`, `message`, a fresh ID.
    pub fn new(code: impl FaultCode, message: impl Into<String>) -> Fault {
        let sender = code.blames_sender();
        Fault {
            sender,
            fault_code: if sender { "soap:Client" } else { "soap:Server" }.to_string(),
            reason: FAULT_REASON.to_string(),
            actor: None,
            error_code: Some(code.as_str().to_string()),
            message: message.into(),
            id: Some(Uuid::new_v4().to_string()),
            method: None,
        }
    }

    /// The URL of the service that faulted.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Fault {
        self.actor = Some(actor.into());
        self
    }

    /// The SOAPAction of the operation that faulted.
    pub fn with_method(mut self, action: Option<&str>) -> Fault {
        self.method = action.map(str::to_string);
        self
    }

    /// The ErrorCode, or `(no ErrorCode)`.
    pub fn code(&self) -> &str {
        self.error_code.as_deref().unwrap_or("(no ErrorCode)")
    }

    /// The whole fault message.
    pub fn to_envelope(&self, version: SoapVersion) -> String {
        let mut detail = XmlWriter::new();
        detail
            .elem("ErrorCode", self.code())
            .elem("Message", &self.message);
        detail.opt_elem("ID", self.id.as_deref());
        if let Some(m) = &self.method {
            detail.elem("Method", &format!("\"{m}\""));
        }
        let detail = detail.into_string();
        let actor = self.actor.as_deref().map(escape);
        let body = match version {
            SoapVersion::V11 => format!(
                "<soap:Fault><faultcode>soap:{}</faultcode><faultstring>{}</faultstring>{}<detail>{detail}</detail></soap:Fault>",
                if self.sender { "Client" } else { "Server" },
                escape(&self.reason),
                actor
                    .map(|a| format!("<faultactor>{a}</faultactor>"))
                    .unwrap_or_default(),
            ),
            SoapVersion::V12 => format!(
                "<soap:Fault><soap:Code><soap:Value>soap:{}</soap:Value></soap:Code><soap:Reason><soap:Text xml:lang=\"en\">{}</soap:Text></soap:Reason>{}<Detail>{detail}</Detail></soap:Fault>",
                if self.sender { "Sender" } else { "Receiver" },
                escape(&self.reason),
                actor
                    .map(|a| format!("<soap:Node>{a}</soap:Node>"))
                    .unwrap_or_default(),
            ),
        };
        envelope(version, &body)
    }

    /// Reads a Body element as a fault; `None` when it is not one. The
    /// detail is `detail` (SOAP 1.1) or `Detail` (SOAP 1.2, unqualified as
    /// MS-WSUSSS 2.2.9.2 asks, or qualified); its ErrorCode, Message, ID
    /// and Method are taken from anywhere below it (servers nest them
    /// differently).
    pub fn read(body: &Element, version: SoapVersion) -> Option<Fault> {
        if !body.is(version.envelope_ns(), "Fault") {
            return None;
        }
        let text = |e: Option<&Element>| e.map(|e| e.text().trim().to_string());
        let (fault_code, reason, actor) = match version {
            SoapVersion::V11 => (
                text(body.child("faultcode")),
                text(body.child("faultstring")),
                text(body.child("faultactor")),
            ),
            SoapVersion::V12 => (
                text(body.child("Code").and_then(|c| c.child("Value"))),
                text(body.child("Reason").and_then(|r| r.child("Text"))),
                text(body.child("Node")),
            ),
        };
        let fault_code = fault_code.unwrap_or_default();
        let detail = body
            .children()
            .iter()
            .find(|c| c.name().eq_ignore_ascii_case("detail"));
        let field = |n: &str| text(detail.and_then(|d| d.find(n))).filter(|s| !s.is_empty());
        let local = fault_code.rsplit(':').next().unwrap_or("");
        Some(Fault {
            sender: matches!(local, "Client" | "Sender"),
            reason: reason.unwrap_or_default(),
            actor: actor.filter(|a| !a.is_empty()),
            error_code: field("ErrorCode"),
            message: field("Message").unwrap_or_default(),
            id: field("ID"),
            method: field("Method").map(|m| m.trim_matches('"').to_string()),
            fault_code,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SOAP fault {}", self.code())?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        } else if !self.reason.is_empty() && self.reason != FAULT_REASON {
            write!(f, " ({})", self.reason)?;
        }
        if let Some(id) = &self.id {
            write!(f, " [fault id {id}]")?;
        }
        Ok(())
    }
}

/// A call a server refuses: the fault it answers, and why (for its log;
/// never sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub fault: Fault,
    pub why: String,
}

impl Refusal {
    pub fn new(code: impl FaultCode, message: &str, why: impl Into<String>) -> Refusal {
        Refusal {
            fault: Fault::new(code, message),
            why: why.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::{Envelope, Limits};

    #[test]
    fn faults_round_trip_in_both_versions() {
        for v in [SoapVersion::V11, SoapVersion::V12] {
            for (code, sender) in [
                (CommonCode::InvalidParameters, true),
                (CommonCode::ServerBusy, false),
            ] {
                let sent = Fault::new(code, "filter <&>")
                    .with_actor("http://h/x.asmx")
                    .with_method(Some("urn:ns/Op"));
                let m = sent.to_envelope(v);
                let e = Envelope::read(m.as_bytes(), &Limits::ANSWER).unwrap();
                assert_eq!(e.version, v);
                let got = e.fault().unwrap();
                assert_eq!(got.sender, sender);
                assert_eq!(got.error_code.as_deref(), Some(code.as_str()));
                assert_eq!(got.message, "filter <&>");
                assert_eq!(got.id, sent.id);
                assert_eq!(got.reason, FAULT_REASON);
                assert_eq!(got.actor.as_deref(), Some("http://h/x.asmx"));
                assert_eq!(got.method.as_deref(), Some("urn:ns/Op"));
                let want = match (v, sender) {
                    (SoapVersion::V11, true) => "soap:Client",
                    (SoapVersion::V11, false) => "soap:Server",
                    (SoapVersion::V12, true) => "soap:Sender",
                    (SoapVersion::V12, false) => "soap:Receiver",
                };
                assert_eq!(got.fault_code, want);
            }
        }
    }

    #[test]
    fn a_body_that_is_no_fault() {
        let e = Envelope::read(
            envelope(SoapVersion::V11, "<Op xmlns=\"urn:x\"/>").as_bytes(),
            &Limits::ANSWER,
        )
        .unwrap();
        assert_eq!(e.fault(), None);
        // A Fault of the other SOAP version's namespace is none either.
        let m = Fault::new(CommonCode::ServerBusy, "").to_envelope(SoapVersion::V12);
        let e = Envelope::read(m.as_bytes(), &Limits::ANSWER).unwrap();
        assert_eq!(Fault::read(&e.body, SoapVersion::V11), None);
    }

    #[test]
    fn display_says_code_message_and_id() {
        let mut f = Fault::new(CommonCode::InvalidParameters, "filter");
        f.id = Some("x".into());
        assert_eq!(
            f.to_string(),
            "SOAP fault InvalidParameters: filter [fault id x]"
        );
        f.error_code = None;
        f.message.clear();
        f.reason = "busy".into();
        f.id = None;
        assert_eq!(f.to_string(), "SOAP fault (no ErrorCode) (busy)");
    }
}
