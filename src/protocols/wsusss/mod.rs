//! MS-WSUSSS (Windows Server Update Services server-server protocol): the
//! pieces both roles share. The upstream (USS) side is `server`; the
//! downstream (DSS) side builds on the same namespaces, operations, fault
//! codes, envelope reader and writers.
//!
//! - [`Operation`]: every operation gapsync knows, with its namespace and
//!   SOAPAction (MS-WSUSSS 3.1.4).
//! - [`ErrorCode`]: the fault codes of MS-WSUSSS 2.2.9.3.
//! - [`parse_envelope`]: a bounded SOAP 1.1 / 1.2 reader that yields the
//!   first element of the Body as a small element tree (DTDs refused, depth
//!   and element count bounded, UTF-8 or UTF-16).
//! - [`XmlWriter`], [`envelope`], [`fault_envelope`]: the writers, shaped as
//!   a Windows WSUS writes them (document/literal, default namespace on the
//!   operation element, fault detail elements unqualified).

pub mod client;
pub mod downstream;
pub mod upstream;

use std::borrow::Cow;
use std::fmt::Write as _;

use quick_xml::XmlVersion;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use uuid::Uuid;

/// SOAP 1.1 envelope namespace.
pub const SOAP11_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const SOAP12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
/// Namespace of the Server Sync Web Service.
pub const SSS_NS: &str = "http://www.microsoft.com/SoftwareDistribution";
/// Namespace of the DSS Authorization Web Service.
pub const DSSAUTH_NS: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// Path of the Server Sync Web Service.
pub const SERVER_SYNC_PATH: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";
/// Path of the DSS Authorization Web Service.
pub const DSS_AUTH_PATH: &str = "/DssAuthWebService/DssAuthWebService.asmx";
/// `AuthPlugInInfo/ServiceUrl` (relative to the server's root URL).
pub const DSS_AUTH_SERVICE_URL: &str = "DssAuthWebService/DssAuthWebService.asmx";
/// The one authorization plug-in (MS-WSUSSS 3.1.4.1).
pub const PLUGIN_ID: &str = "DssTargeting";
/// The protocol version gapsync announces (as WSUS 10.0 does).
pub const PROTOCOL_VERSION: &str = "1.20";
/// `Deadline` of a deployment without one (MS-WSUSSS 3.1.4.10.3.5).
pub const NO_DEADLINE: &str = "9999-12-31T23:59:59.9999999";
/// `ParentGroupId` of the top target group.
pub const NIL_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// Deepest element nesting accepted in a SOAP message.
pub const MAX_DEPTH: usize = 64;
/// Most elements accepted in one SOAP message.
pub const MAX_ELEMENTS: usize = 500_000;

/// The two web services of a USS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    ServerSync,
    DssAuth,
}

impl Service {
    pub fn path(self) -> &'static str {
        match self {
            Service::ServerSync => SERVER_SYNC_PATH,
            Service::DssAuth => DSS_AUTH_PATH,
        }
    }
}

/// SOAP 1.1 or 1.2, told apart by the envelope namespace.
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
    /// The HTTP Content-Type of a message.
    pub fn content_type(self) -> &'static str {
        match self {
            SoapVersion::V11 => "text/xml; charset=utf-8",
            SoapVersion::V12 => "application/soap+xml; charset=utf-8",
        }
    }
}

/// The operations of MS-WSUSSS 3.1.4 that gapsync serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    GetAuthConfig,
    GetAuthorizationCookie,
    GetCookie,
    GetConfigData,
    GetRevisionIdList,
    GetUpdateData,
    GetUpdateDecryptionData,
    GetDeployments,
    DownloadFiles,
    GetRelatedRevisionsForUpdates,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::GetAuthConfig,
        Operation::GetAuthorizationCookie,
        Operation::GetCookie,
        Operation::GetConfigData,
        Operation::GetRevisionIdList,
        Operation::GetUpdateData,
        Operation::GetUpdateDecryptionData,
        Operation::GetDeployments,
        Operation::DownloadFiles,
        Operation::GetRelatedRevisionsForUpdates,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::GetAuthConfig => "GetAuthConfig",
            Operation::GetAuthorizationCookie => "GetAuthorizationCookie",
            Operation::GetCookie => "GetCookie",
            Operation::GetConfigData => "GetConfigData",
            Operation::GetRevisionIdList => "GetRevisionIdList",
            Operation::GetUpdateData => "GetUpdateData",
            Operation::GetUpdateDecryptionData => "GetUpdateDecryptionData",
            Operation::GetDeployments => "GetDeployments",
            Operation::DownloadFiles => "DownloadFiles",
            Operation::GetRelatedRevisionsForUpdates => "GetRelatedRevisionsForUpdates",
        }
    }

    /// The service that offers the operation.
    pub fn service(self) -> Service {
        match self {
            Operation::GetAuthorizationCookie => Service::DssAuth,
            _ => Service::ServerSync,
        }
    }

    /// Namespace of the request and response elements.
    pub fn namespace(self) -> &'static str {
        match self.service() {
            Service::DssAuth => DSSAUTH_NS,
            Service::ServerSync => SSS_NS,
        }
    }

    /// The SOAPAction (SOAP 1.1 header, SOAP 1.2 `action` parameter).
    pub fn soap_action(self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }

    /// The operation a request element names (namespace and local name).
    pub fn from_element(ns: Option<&str>, name: &str) -> Option<Operation> {
        Self::ALL
            .into_iter()
            .find(|op| op.name() == name && ns == Some(op.namespace()))
    }
}

/// The ErrorCode values of MS-WSUSSS 2.2.9.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidParameters,
    InvalidCookie,
    InternalServerError,
    IncompatibleProtocolVersion,
    InvalidAuthorizationCookie,
    FileDigestsMissing,
    ServerChanged,
    ServerBusy,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::InvalidParameters,
        ErrorCode::InvalidCookie,
        ErrorCode::InternalServerError,
        ErrorCode::IncompatibleProtocolVersion,
        ErrorCode::InvalidAuthorizationCookie,
        ErrorCode::FileDigestsMissing,
        ErrorCode::ServerChanged,
        ErrorCode::ServerBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameters => "InvalidParameters",
            ErrorCode::InvalidCookie => "InvalidCookie",
            ErrorCode::InternalServerError => "InternalServerError",
            ErrorCode::IncompatibleProtocolVersion => "IncompatibleProtocolVersion",
            ErrorCode::InvalidAuthorizationCookie => "InvalidAuthorizationCookie",
            ErrorCode::FileDigestsMissing => "FileDigestsMissing",
            ErrorCode::ServerChanged => "ServerChanged",
            ErrorCode::ServerBusy => "ServerBusy",
        }
    }

    /// Case-sensitive, as 2.2.9.1 says.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the fault blames the request (`soap:Client` / `soap:Sender`)
    /// rather than the server.
    pub fn is_client_fault(self) -> bool {
        !matches!(self, ErrorCode::InternalServerError | ErrorCode::ServerBusy)
    }
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// One element of a parsed SOAP message: namespace, local name, its text
/// (concatenated, untrimmed) and child elements. Attributes other than
/// `xsi:nil` are not kept: MS-WSUSSS messages carry none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub ns: Option<String>,
    pub name: String,
    pub text: String,
    pub nil: bool,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child with this name; `None` when the
    /// child is absent or `xsi:nil`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).filter(|c| !c.nil).map(|c| c.text.trim())
    }
}

/// A parsed SOAP envelope: its version and the first element of the Body
/// (the operation's request or response element, or a Fault).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub version: SoapVersion,
    pub body: Element,
}

/// Why a SOAP message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("text encoding: {0}")]
    Encoding(String),
    #[error("DTDs are refused in SOAP messages")]
    Dtd,
    #[error("malformed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("elements nest deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("the document element is {0}, not a SOAP 1.1 or 1.2 Envelope")]
    NotAnEnvelope(String),
    #[error("the envelope has no Body element")]
    NoBody,
    #[error("the Body is empty")]
    EmptyBody,
    #[error("the message ends before the envelope is closed")]
    Truncated,
}

/// Reads a SOAP 1.1 or 1.2 envelope (UTF-8, or UTF-16 as
/// `metadata::decode_text` accepts) and returns the first element inside
/// its Body. Headers are skipped.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let text = crate::model::metadata::decode_text(bytes)
        .map_err(|e| EnvelopeError::Encoding(e.to_string()))?;
    parse_envelope_str(&text)
}

/// [`parse_envelope`] for text that is already decoded.
pub fn parse_envelope_str(text: &str) -> Result<Envelope, EnvelopeError> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut reader = quick_xml::NsReader::from_str(text);
    let mut version_xml = XmlVersion::Implicit1_0;
    let mut stack: Vec<Element> = Vec::new();
    let mut version: Option<SoapVersion> = None;
    // Depth (stack length) of the Body's children while inside the Body.
    let mut body_depth: Option<usize> = None;
    let mut body: Option<Element> = None;
    let mut saw_body = false;
    let mut elements = 0usize;
    let xml_err = |pos: u64, message: String| EnvelopeError::Xml {
        position: pos,
        message,
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| xml_err(reader.buffer_position(), e.to_string()))?;
        let pos = reader.buffer_position();
        match event {
            Event::DocType(_) => return Err(EnvelopeError::Dtd),
            Event::Decl(ref d) => {
                version_xml = d.xml_version().map_err(|e| xml_err(pos, e.to_string()))?;
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(EnvelopeError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(EnvelopeError::TooDeep);
                }
                let (ns, local) = reader.resolver().resolve_element(e.name());
                let ns = match ns {
                    ResolveResult::Bound(Namespace(n)) => Some(n.to_string()),
                    ResolveResult::Unbound => None,
                    ResolveResult::Unknown(p) => {
                        return Err(xml_err(pos, format!("undeclared namespace prefix {p:?}")));
                    }
                };
                let name = local.into_inner().to_string();
                let mut nil = false;
                for a in e.attributes() {
                    let a = a.map_err(|err| xml_err(pos, err.to_string()))?;
                    let (ans, alocal) = reader.resolver().resolve_attribute(a.key);
                    if alocal.into_inner() == "nil"
                        && matches!(ans, ResolveResult::Bound(Namespace(n)) if n == XSI_NS)
                    {
                        let v = a
                            .normalized_value(version_xml)
                            .map_err(|err| xml_err(pos, err.to_string()))?;
                        nil = matches!(v.trim(), "true" | "1");
                    }
                }
                if stack.is_empty() {
                    if version.is_some() {
                        return Err(xml_err(pos, "more than one document element".into()));
                    }
                    version = Some(match (ns.as_deref(), name.as_str()) {
                        (Some(SOAP11_ENV), "Envelope") => SoapVersion::V11,
                        (Some(SOAP12_ENV), "Envelope") => SoapVersion::V12,
                        _ => {
                            return Err(EnvelopeError::NotAnEnvelope(match &ns {
                                Some(n) => format!("{{{n}}}{name}"),
                                None => name,
                            }));
                        }
                    });
                } else if stack.len() == 1
                    && name == "Body"
                    && ns.as_deref() == version.map(SoapVersion::envelope_ns)
                    && !saw_body
                {
                    saw_body = true;
                    body_depth = Some(2);
                }
                stack.push(Element {
                    ns,
                    name,
                    text: String::new(),
                    nil,
                    children: Vec::new(),
                });
                if empty && close(&mut stack, &mut body_depth, &mut body)? {
                    return finish(version, saw_body, body);
                }
            }
            Event::End(_) => {
                if close(&mut stack, &mut body_depth, &mut body)? {
                    return finish(version, saw_body, body);
                }
            }
            Event::Text(ref t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(ref t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(ref r) => {
                let resolved: String = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => {
                            return Err(xml_err(
                                pos,
                                format!("bad character reference &{};", &**r),
                            ));
                        }
                    }
                } else {
                    match quick_xml::escape::resolve_xml_entity(r) {
                        Some(v) => v.to_string(),
                        None => return Err(xml_err(pos, format!("undefined entity &{};", &**r))),
                    }
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::Eof => return Err(EnvelopeError::Truncated),
            Event::Comment(_) | Event::PI(_) => {}
        }
    }
}

/// Pops the element that just closed. Elements of the Body's subtree are
/// attached to their parent; the Body keeps its first child; everything
/// else in the envelope (a Header) is dropped. True when the envelope
/// itself closed.
fn close(
    stack: &mut Vec<Element>,
    body_depth: &mut Option<usize>,
    body: &mut Option<Element>,
) -> Result<bool, EnvelopeError> {
    let Some(done) = stack.pop() else {
        return Err(EnvelopeError::Xml {
            position: 0,
            message: "end tag without a start tag".into(),
        });
    };
    if stack.is_empty() {
        return Ok(true);
    }
    if *body_depth == Some(stack.len() + 1) {
        // The Body itself closed.
        *body_depth = None;
        if body.is_none() {
            *body = done.children.into_iter().next();
        }
    } else if body_depth.is_some_and(|d| stack.len() >= d)
        && let Some(parent) = stack.last_mut()
    {
        parent.children.push(done);
    }
    Ok(false)
}

fn finish(
    version: Option<SoapVersion>,
    saw_body: bool,
    body: Option<Element>,
) -> Result<Envelope, EnvelopeError> {
    let version = version.ok_or(EnvelopeError::Truncated)?;
    if !saw_body {
        return Err(EnvelopeError::NoBody);
    }
    let body = body.ok_or(EnvelopeError::EmptyBody)?;
    Ok(Envelope { version, body })
}

/// The application-level content of a SOAP fault (MS-WSUSSS 2.2.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `None` when the fault carries no (or an unknown) ErrorCode.
    pub code: Option<ErrorCode>,
    /// The ErrorCode text as sent (kept when it is not a known value).
    pub code_text: Option<String>,
    pub message: String,
    pub id: Option<String>,
    /// `faultstring` (1.1) or `Reason/Text` (1.2).
    pub reason: String,
}

/// Reads a Body element as a SOAP fault; `None` when it is not a Fault.
/// The detail is `detail` (SOAP 1.1) or the unqualified `Detail` MS-WSUSSS
/// 2.2.9.2 asks for (SOAP 1.2; `soap:Detail` is read too).
pub fn parse_fault(body: &Element, version: SoapVersion) -> Option<Fault> {
    if body.name != "Fault" || body.ns.as_deref() != Some(version.envelope_ns()) {
        return None;
    }
    let detail = body
        .children
        .iter()
        .find(|c| c.name == "detail" || c.name == "Detail");
    let reason = match version {
        SoapVersion::V11 => body.child_text("faultstring").unwrap_or("").to_string(),
        SoapVersion::V12 => body
            .child("Reason")
            .and_then(|r| r.child_text("Text"))
            .unwrap_or("")
            .to_string(),
    };
    let code_text = detail
        .and_then(|d| d.child_text("ErrorCode"))
        .map(str::to_string);
    Some(Fault {
        code: code_text.as_deref().and_then(ErrorCode::parse),
        code_text,
        message: detail
            .and_then(|d| d.child_text("Message"))
            .unwrap_or("")
            .to_string(),
        id: detail.and_then(|d| d.child_text("ID")).map(str::to_string),
        reason,
    })
}

/// Parses an xsd:boolean (`true`, `false`, `1`, `0`).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Escapes text for element content: `<`, `>`, `&` (as Windows WSUS does),
/// and CR as `&#xD;` so that a parser's line-end normalization cannot
/// change the text (update documents travel verbatim). Characters XML 1.0
/// cannot carry (control characters other than tab, LF, CR) are dropped.
pub fn escape(s: &str) -> Cow<'_, str> {
    let clean = |c: char| !c.is_control() || matches!(c, '\t' | '\n' | '\r');
    let escaped = if s.chars().all(clean) {
        quick_xml::escape::partial_escape(s)
    } else {
        let filtered: String = s.chars().filter(|&c| clean(c)).collect();
        Cow::Owned(quick_xml::escape::partial_escape(filtered).into_owned())
    };
    if escaped.contains('\r') {
        Cow::Owned(escaped.replace('\r', "&#xD;"))
    } else {
        escaped
    }
}

/// A small writer for the unqualified children of a default-namespaced
/// operation element (the shape Windows WSUS writes).
#[derive(Debug, Default)]
pub struct XmlWriter {
    buf: String,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self::default()
    }
    /// `<name xmlns="ns">`.
    pub fn start_ns(&mut self, name: &str, ns: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name} xmlns=\"{}\">", escape(ns));
        self
    }
    /// `<name>`.
    pub fn start(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name}>");
        self
    }
    /// `</name>`.
    pub fn end(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.buf, "</{name}>");
        self
    }
    /// `<name>text</name>` (escaped).
    pub fn elem(&mut self, name: &str, text: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name}>{}</{name}>", escape(text));
        self
    }
    /// `<name />`.
    pub fn empty(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name} />");
        self
    }
    /// `<name />` when `items` is empty, else `<name>` ... `</name>` around
    /// what `each` writes for every item.
    pub fn list<T>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return self.empty(name);
        }
        self.start(name);
        for item in items {
            each(self, item);
        }
        self.end(name)
    }
    pub fn as_str(&self) -> &str {
        &self.buf
    }
    pub fn into_string(self) -> String {
        self.buf
    }
}

/// A whole SOAP message around `body` (the already written Body content).
pub fn envelope(version: SoapVersion, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"{}\" xmlns:xsi=\"{XSI_NS}\" xmlns:xsd=\"{XSD_NS}\"><soap:Body>{body}</soap:Body></soap:Envelope>",
        version.envelope_ns()
    )
}

/// What a USS puts into a fault.
#[derive(Debug, Clone)]
pub struct FaultInfo<'a> {
    pub code: ErrorCode,
    /// For InvalidParameters, the parameter's name (2.2.9.3).
    pub message: &'a str,
    /// Identifies this instance of the fault.
    pub id: Uuid,
    /// The URL of the service that faulted.
    pub actor: &'a str,
    /// The SOAPAction of the failed operation, if known.
    pub method: Option<&'a str>,
}

/// A SOAP fault message (MS-WSUSSS 2.2.9): SOAP 1.1 `faultcode`,
/// `faultstring`, `faultactor` and `detail`; SOAP 1.2 `Code`, `Reason`,
/// `Node` and an unqualified `Detail`. The detail holds the unqualified
/// `ErrorCode`, `Message`, `ID` (and `Method`, as Windows WSUS adds).
pub fn fault_envelope(version: SoapVersion, f: &FaultInfo<'_>) -> String {
    let mut detail = XmlWriter::new();
    detail
        .elem("ErrorCode", f.code.as_str())
        .elem("Message", f.message)
        .elem("ID", &f.id.to_string());
    if let Some(m) = f.method {
        detail.elem("Method", &format!("\"{m}\""));
    }
    let detail = detail.into_string();
    let body = match version {
        SoapVersion::V11 => format!(
            "<soap:Fault><faultcode>soap:{}</faultcode><faultstring>Fault occurred</faultstring><faultactor>{}</faultactor><detail>{detail}</detail></soap:Fault>",
            if f.code.is_client_fault() {
                "Client"
            } else {
                "Server"
            },
            escape(f.actor)
        ),
        SoapVersion::V12 => format!(
            "<soap:Fault><soap:Code><soap:Value>soap:{}</soap:Value></soap:Code><soap:Reason><soap:Text xml:lang=\"en\">Fault occurred</soap:Text></soap:Reason><soap:Node>{}</soap:Node><Detail>{detail}</Detail></soap:Fault>",
            if f.code.is_client_fault() {
                "Sender"
            } else {
                "Receiver"
            },
            escape(f.actor)
        ),
    };
    envelope(version, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip() {
        for op in Operation::ALL {
            assert_eq!(
                Operation::from_element(Some(op.namespace()), op.name()),
                Some(op)
            );
            assert!(op.soap_action().ends_with(op.name()));
        }
        assert_eq!(Operation::from_element(None, "GetCookie"), None);
        assert_eq!(
            Operation::GetAuthorizationCookie.soap_action(),
            "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService/GetAuthorizationCookie"
        );
    }

    #[test]
    fn error_codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("invalidcookie"), None);
    }

    #[test]
    fn reads_the_body_element() {
        let m = r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header><x/></soap:Header><soap:Body><GetCookie xmlns="http://www.microsoft.com/SoftwareDistribution"><authCookies><AuthorizationCookie><PlugInId>DssTargeting</PlugInId><CookieData>QUJD</CookieData></AuthorizationCookie></authCookies><oldCookie xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/><protocolVersion>1.20 &amp; more</protocolVersion></GetCookie></soap:Body></soap:Envelope>"#;
        let e = parse_envelope(m.as_bytes()).unwrap();
        assert_eq!(e.version, SoapVersion::V11);
        assert_eq!(e.body.name, "GetCookie");
        assert_eq!(e.body.ns.as_deref(), Some(SSS_NS));
        assert_eq!(e.body.child_text("protocolVersion"), Some("1.20 & more"));
        assert_eq!(e.body.child_text("oldCookie"), None);
        let ac = e.body.child("authCookies").unwrap();
        assert_eq!(ac.children_named("AuthorizationCookie").count(), 1);
    }

    #[test]
    fn refuses_bad_messages() {
        for (m, want) in [
            ("<a/>", "not a SOAP"),
            ("<!DOCTYPE x [<!ENTITY a 'b'>]><x/>", "DTD"),
            (
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>",
                "ends before",
            ),
            (
                "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"></soap:Envelope>",
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
            let e = parse_envelope(m.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{m}: {e}");
        }
        let deep = format!(
            "<soap:Envelope xmlns:soap=\"{SOAP11_ENV}\"><soap:Body>{}{}</soap:Body></soap:Envelope>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert_eq!(
            parse_envelope(deep.as_bytes()).unwrap_err(),
            EnvelopeError::TooDeep
        );
    }

    #[test]
    fn faults_round_trip_in_both_versions() {
        for v in [SoapVersion::V11, SoapVersion::V12] {
            let id = Uuid::new_v4();
            let m = fault_envelope(
                v,
                &FaultInfo {
                    code: ErrorCode::InvalidParameters,
                    message: "filter",
                    id,
                    actor: "http://h/x.asmx",
                    method: Some("http://www.microsoft.com/SoftwareDistribution/GetRevisionIdList"),
                },
            );
            let e = parse_envelope(m.as_bytes()).unwrap();
            assert_eq!(e.version, v);
            let f = parse_fault(&e.body, v).unwrap();
            assert_eq!(f.code, Some(ErrorCode::InvalidParameters));
            assert_eq!(f.message, "filter");
            assert_eq!(f.id, Some(id.to_string()));
            assert_eq!(f.reason, "Fault occurred");
        }
    }

    #[test]
    fn escape_drops_control_characters() {
        assert_eq!(escape("a<b&\u{1}c\"'"), "a&lt;b&amp;c\"'");
    }

    #[test]
    fn text_survives_a_round_trip_verbatim() {
        let text = "<upd:Update>\r\n\ta &amp; b\r</upd:Update>\n";
        let mut w = XmlWriter::new();
        w.start_ns("X", SSS_NS).elem("XmlUpdateBlob", text).end("X");
        let e = parse_envelope(envelope(SoapVersion::V11, w.as_str()).as_bytes()).unwrap();
        assert_eq!(e.body.child("XmlUpdateBlob").unwrap().text, text);
    }
}
