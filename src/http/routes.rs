//! The routing table: which request paths the server answers and who
//! answers them.
//!
//! SOAP is routed by a table of operations, one row each: the endpoint's
//! path, the namespace and local name of the request element, the
//! SOAPAction, and the handler. IIS (and so Windows WSUS and its clients)
//! treats paths without regard to case, and Windows WSUS sends some with a
//! doubled leading slash, so a path is compared lower-case with at most one
//! extra leading slash removed.
//!
//! The table does the SOAP work every protocol shares, once
//! ([`Routes::answer`], on the blocking pool with a store handle): it
//! reads the envelope (`crate::soap`, request limits), finds the row of
//! the body's first element at this path, checks a SOAPAction the client
//! sent against the row's, calls the handler, and writes the answer or the
//! fault (actor: the endpoint's URL; method: the row's SOAPAction). A
//! request the table cannot place is an `InvalidParameters` fault: an
//! unreadable message (Message `request`), an unknown operation or one of
//! another endpoint (`operation`), a SOAPAction of another operation
//! (`SOAPAction`).
//!
//! A protocol plugs in by adding rows ([`Routes::operation`]; MS-WSUSSS
//! adds its ten in `protocols::wsusss::upstream::routes`), and the server
//! merges the protocols' tables ([`Routes::merge`]). MS-WUSP adds its rows
//! for `/ClientWebService/client.asmx`, `/SimpleAuthWebService/SimpleAuth.asmx`
//! and `/ReportingWebService/ReportingWebService.asmx` in
//! `protocols::wusp::routes`; a row may answer in WCF's envelope style
//! ([`EnvelopeStyle`]) and accept a second SOAPAction.
//!
//! `/Content/...` (case-insensitive, also with a doubled slash) is the
//! content tree, served by `super::content`.

use std::sync::Arc;

use crate::soap::{
    CommonCode, Element, Envelope, Limits, Refusal, SoapVersion, action_names, envelope,
    envelope_wcf,
};
use crate::store::Store;

/// One SOAP request as the HTTP layer received it.
#[derive(Debug, Clone, Copy)]
pub struct SoapRequest<'a> {
    /// The endpoint's path as registered (its canonical spelling).
    pub path: &'a str,
    pub body: &'a [u8],
    /// SOAPAction (SOAP 1.1 header or SOAP 1.2 `action` parameter),
    /// without quotes; `None` when the client sent none.
    pub action: Option<&'a str>,
    /// Scheme and authority the client used (`http://host:port`), for
    /// URLs in answers and fault actors.
    pub base_url: &'a str,
    /// Bounds of the envelope read (`max_bytes`: the server's body limit).
    pub limits: Limits,
}

/// The answer to a SOAP request.
#[derive(Debug, Clone)]
pub struct SoapReply {
    /// 200, or 500 for faults (SOAP over HTTP).
    pub status: u16,
    pub version: SoapVersion,
    pub body: String,
    /// One line for the server log: operation, outcome, detail.
    pub summary: String,
}

/// One call as a handler gets it: the envelope already read and placed.
#[derive(Debug, Clone, Copy)]
pub struct SoapCall<'a> {
    pub version: SoapVersion,
    /// The envelope's Header, if any.
    pub header: Option<&'a Element>,
    /// The request element (the Body's first element).
    pub body: &'a Element,
    /// Scheme and authority the client used (`http://host:port`).
    pub base_url: &'a str,
}

/// What a handler answers: the Body's content (the response element,
/// written) and a few words for the log line.
#[derive(Debug, Clone)]
pub struct SoapAnswer {
    pub body: String,
    pub summary: String,
}

/// The handler of one operation. Called on a blocking thread with a store
/// handle of its own; a failure is a [`Refusal`] (the fault it answers and
/// why, for the log; boxed, as it is large), never a panic.
pub trait SoapHandler: Send + Sync + 'static {
    fn call(&self, store: &Store, call: &SoapCall<'_>) -> Result<SoapAnswer, Box<Refusal>>;
}

impl<F> SoapHandler for F
where
    F: Fn(&Store, &SoapCall<'_>) -> Result<SoapAnswer, Box<Refusal>> + Send + Sync + 'static,
{
    fn call(&self, store: &Store, call: &SoapCall<'_>) -> Result<SoapAnswer, Box<Refusal>> {
        self(store, call)
    }
}

/// The key of one row: where an operation is served and how it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapOperation {
    /// The endpoint's path (`/Dir/File.asmx`), as the protocol spells it.
    pub path: &'static str,
    /// Namespace of the request element.
    pub namespace: &'static str,
    /// Local name of the request element (also the operation's name in
    /// the log).
    pub name: &'static str,
    /// The SOAPAction (without quotes).
    pub action: String,
    /// Another SOAPAction the operation is also sent under (MS-WUSP's
    /// SyncPrinterCatalog under SyncUpdates' action).
    pub also_action: Option<String>,
    /// How the answer's envelope is written.
    pub style: EnvelopeStyle,
}

/// The envelope style of an endpoint's answers, as Windows WSUS writes
/// them: ASMX services (`soap:` prefix, XML declaration) or WCF services
/// (MS-WUSP's client web service: `s:` prefix, no declaration, for SOAP
/// 1.1; SOAP 1.2 answers are written as ASMX writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvelopeStyle {
    #[default]
    Asmx,
    Wcf,
}

impl SoapOperation {
    /// An ASMX operation answering under one SOAPAction.
    pub fn new(
        path: &'static str,
        namespace: &'static str,
        name: &'static str,
        action: String,
    ) -> SoapOperation {
        SoapOperation {
            path,
            namespace,
            name,
            action,
            also_action: None,
            style: EnvelopeStyle::Asmx,
        }
    }

    /// The same operation, answered in `style`.
    pub fn style(self, style: EnvelopeStyle) -> SoapOperation {
        SoapOperation { style, ..self }
    }

    /// The same operation, also accepted under the SOAPAction `action`.
    pub fn also_action(self, action: String) -> SoapOperation {
        SoapOperation {
            also_action: Some(action),
            ..self
        }
    }

    /// Whether a SOAPAction a client sent names this operation.
    fn named_by(&self, sent: &str) -> bool {
        action_names(sent, &self.action)
            || self
                .also_action
                .as_deref()
                .is_some_and(|a| action_names(sent, a))
    }
}

#[derive(Clone)]
struct Row {
    /// `op.path` lower-case.
    key: String,
    op: SoapOperation,
    handler: Arc<dyn SoapHandler>,
}

/// What a path leads to.
#[derive(Clone)]
pub(crate) enum Route {
    /// A SOAP endpoint, by its canonical path.
    Soap {
        path: &'static str,
    },
    Content,
}

/// The routing table.
#[derive(Clone, Default)]
pub struct Routes {
    rows: Arc<Vec<Row>>,
    content: bool,
}

impl Routes {
    /// An empty table (every path 404).
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Adds the row of one operation. A row with the same path and request
    /// element replaces the earlier one.
    pub fn operation(self, op: SoapOperation, handler: impl SoapHandler) -> Routes {
        self.operation_row(Row {
            key: op.path.to_ascii_lowercase(),
            op,
            handler: Arc::new(handler),
        })
    }

    /// Adds every row (and the content tree) of `other`.
    pub fn merge(mut self, other: Routes) -> Routes {
        for row in other.rows.iter() {
            self = self.operation_row(row.clone());
        }
        self.content |= other.content;
        self
    }

    fn operation_row(mut self, row: Row) -> Routes {
        let rows = Arc::make_mut(&mut self.rows);
        rows.retain(|r| {
            !(r.key == row.key && r.op.namespace == row.op.namespace && r.op.name == row.op.name)
        });
        rows.push(row);
        self
    }

    /// Serves `/Content/XX/<SHA-1>.ext` from the store.
    pub fn content(mut self) -> Routes {
        self.content = true;
        self
    }

    /// The rows' operations, in the order they were added.
    pub fn operations(&self) -> impl Iterator<Item = &SoapOperation> {
        self.rows.iter().map(|r| &r.op)
    }

    /// The route of a request path (no query): case-insensitive, with one
    /// or two leading slashes.
    pub(crate) fn find(&self, path: &str) -> Option<Route> {
        let one = path.strip_prefix('/')?;
        let rest = one.strip_prefix('/').unwrap_or(one);
        if rest.starts_with('/') {
            return None;
        }
        let key = format!("/{}", rest.to_ascii_lowercase());
        if let Some(row) = self.rows.iter().find(|r| r.key == key) {
            return Some(Route::Soap { path: row.op.path });
        }
        if self.content && key.starts_with("/content/") {
            return Some(Route::Content);
        }
        None
    }

    /// Answers one SOAP request to the endpoint `req.path` (see the module
    /// documentation). Never panics on hostile input: every failure is a
    /// fault.
    pub fn answer(&self, store: &Store, req: &SoapRequest<'_>) -> SoapReply {
        let actor = format!("{}{}", req.base_url, req.path);
        let invalid =
            |param: &str, why: String| Refusal::new(CommonCode::InvalidParameters, param, why);
        let env = match Envelope::read(req.body, &req.limits) {
            Ok(e) => e,
            Err(e) => {
                let why = format!("unreadable SOAP message: {e}");
                return fault_reply(SoapVersion::V11, None, &actor, invalid("request", why));
            }
        };
        let version = env.version;
        let body = &env.body;
        let key = req.path.to_ascii_lowercase();
        let names = |r: &&Row| body.ns() == Some(r.op.namespace) && body.name() == r.op.name;
        let Some(row) = self.rows.iter().filter(|r| r.key == key).find(names) else {
            let refusal = match self.rows.iter().find(names) {
                Some(other) => (
                    Some(&other.op),
                    invalid(
                        "operation",
                        format!("{} is not an operation of {}", other.op.name, req.path),
                    ),
                ),
                None => (
                    None,
                    invalid(
                        "operation",
                        format!("unknown operation {}", body.qualified_name()),
                    ),
                ),
            };
            return fault_reply(version, refusal.0, &actor, refusal.1);
        };
        if let Some(action) = req.action.map(str::trim).filter(|a| !a.is_empty())
            && !row.op.named_by(action)
        {
            let why = format!(
                "SOAPAction {action:?} does not match the body's {}",
                row.op.name
            );
            return fault_reply(version, Some(&row.op), &actor, invalid("SOAPAction", why));
        }
        let call = SoapCall {
            version,
            header: env.header.as_ref(),
            body,
            base_url: req.base_url,
        };
        match row.handler.call(store, &call) {
            Ok(answer) => SoapReply {
                status: 200,
                version,
                body: match (row.op.style, version) {
                    (EnvelopeStyle::Wcf, SoapVersion::V11) => envelope_wcf(&answer.body),
                    _ => envelope(version, &answer.body),
                },
                summary: format!("{} ok {}", row.op.name, answer.summary),
            },
            Err(refusal) => fault_reply(version, Some(&row.op), &actor, *refusal),
        }
    }
}

/// The fault of a refused call, and its log line: operation, `fault`,
/// ErrorCode, fault ID, why.
fn fault_reply(
    version: SoapVersion,
    op: Option<&SoapOperation>,
    actor: &str,
    refusal: Refusal,
) -> SoapReply {
    let fault = refusal
        .fault
        .with_actor(actor)
        .with_method(op.map(|o| o.action.as_str()));
    SoapReply {
        status: 500,
        version,
        body: fault.to_envelope(version),
        summary: format!(
            "{} fault {} {}: {}",
            op.map_or("-", |o| o.name),
            fault.code(),
            fault.id.as_deref().unwrap_or("-"),
            refusal.why
        ),
    }
}

/// A fault the HTTP layer answers itself (the request never reached the
/// table): `code`, `message`, the endpoint's URL as actor.
pub(crate) fn http_fault(
    version: SoapVersion,
    code: CommonCode,
    message: &str,
    actor: &str,
) -> String {
    crate::soap::Fault::new(code, message)
        .with_actor(actor)
        .to_envelope(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::Fault;

    const SSS: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";
    const AUTH: &str = "/DssAuthWebService/DssAuthWebService.asmx";

    fn op(path: &'static str, name: &'static str) -> SoapOperation {
        SoapOperation::new(path, "urn:t", name, format!("urn:t/{name}"))
    }

    fn echo(_: &Store, call: &SoapCall<'_>) -> Result<SoapAnswer, Box<Refusal>> {
        if call.body.child_text("fail").is_some() {
            return Err(Box::new(Refusal::new(
                CommonCode::InternalServerError,
                "",
                "asked to",
            )));
        }
        Ok(SoapAnswer {
            body: format!("<{0}Response xmlns=\"urn:t\" />", call.body.name()),
            summary: "echoed".into(),
        })
    }

    fn soap_path(r: &Routes, p: &str) -> Option<&'static str> {
        match r.find(p) {
            Some(Route::Soap { path }) => Some(path),
            _ => None,
        }
    }

    /// Rule: a row answers in its envelope style (WCF only for SOAP 1.1)
    /// and accepts its second SOAPAction, and only that one.
    #[test]
    fn rows_answer_in_their_style_and_accept_their_second_action() {
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::init(&tmp.path().join("s"), "t", crate::store::Mode::Autonomous).unwrap();
        let r = Routes::new().operation(
            op(SSS, "P")
                .style(EnvelopeStyle::Wcf)
                .also_action("urn:t/Q".into()),
            echo,
        );
        let call = |version, action: Option<&str>| {
            let env = envelope(version, "<P xmlns=\"urn:t\"/>");
            r.answer(
                &store,
                &SoapRequest {
                    path: SSS,
                    body: env.as_bytes(),
                    action,
                    base_url: "http://h",
                    limits: Limits::REQUEST,
                },
            )
        };
        let wcf = call(SoapVersion::V11, Some("urn:t/Q"));
        assert_eq!(wcf.status, 200, "{}", wcf.body);
        assert!(wcf.body.starts_with("<s:Envelope xmlns:s="), "{}", wcf.body);
        let v12 = call(SoapVersion::V12, Some("urn:t/P"));
        assert!(v12.body.starts_with("<?xml"), "{}", v12.body);
        assert!(v12.body.contains("<soap:Body><PResponse"), "{}", v12.body);
        assert_eq!(call(SoapVersion::V11, Some("urn:t/R")).status, 500);
    }

    #[test]
    fn paths_are_found_case_insensitively_with_one_or_two_slashes() {
        let r = Routes::new()
            .operation(op(SSS, "A"), echo)
            .operation(op(AUTH, "B"), echo)
            .content();
        assert_eq!(soap_path(&r, SSS), Some(SSS));
        assert_eq!(soap_path(&r, &format!("/{SSS}")), Some(SSS));
        assert_eq!(
            soap_path(&r, "/dssauthwebservice/dssauthwebservice.asmx"),
            Some(AUTH)
        );
        assert_eq!(soap_path(&r, &format!("//{SSS}")), None);
        assert_eq!(soap_path(&r, "/ServerSyncWebService/"), None);
        assert!(matches!(r.find("//content/cd/x"), Some(Route::Content)));
        assert!(matches!(r.find("/Content/CD/x"), Some(Route::Content)));
        assert!(r.find("/contentx").is_none());
        assert!(r.find("/ClientWebService/client.asmx").is_none());
        // A second protocol plugs in beside, by adding rows.
        let wusp = Routes::new().operation(op("/ClientWebService/client.asmx", "C"), echo);
        let r = r.merge(wusp);
        assert_eq!(
            soap_path(&r, "/clientwebservice/CLIENT.asmx"),
            Some("/ClientWebService/client.asmx")
        );
        assert_eq!(soap_path(&r, SSS), Some(SSS));
        assert_eq!(r.operations().count(), 3);
    }

    /// Rule: the table places a call by path and request element and
    /// checks its SOAPAction; every other request is an InvalidParameters
    /// fault naming what was wrong.
    #[test]
    fn calls_are_placed_by_path_element_and_action() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("s");
        let store = Store::init(&root, "t", crate::store::Mode::Autonomous).unwrap();
        let r = Routes::new()
            .operation(op(SSS, "A"), echo)
            .operation(op(AUTH, "B"), echo);
        let call = |path: &'static str, action: Option<&str>, body: &str| {
            let env = envelope(SoapVersion::V11, body);
            r.answer(
                &store,
                &SoapRequest {
                    path,
                    body: env.as_bytes(),
                    action,
                    base_url: "http://h",
                    limits: Limits::REQUEST,
                },
            )
        };
        let fault_of = |reply: &SoapReply| {
            assert_eq!(reply.status, 500, "{}", reply.body);
            let e = Envelope::read(reply.body.as_bytes(), &Limits::ANSWER).unwrap();
            e.fault().unwrap()
        };
        let ok = call(SSS, Some("\"urn:t/A\""), "<A xmlns=\"urn:t\"/>");
        assert_eq!(ok.status, 200);
        assert!(ok.body.contains("<AResponse"), "{}", ok.body);
        assert_eq!(ok.summary, "A ok echoed");
        let ok = call(SSS, None, "<A xmlns=\"urn:t\"/>");
        assert_eq!(ok.status, 200);

        for (path, action, body, message, method) in [
            (
                SSS,
                None,
                "<B xmlns=\"urn:t\"/>",
                "operation",
                Some("urn:t/B"),
            ),
            (SSS, None, "<Z xmlns=\"urn:t\"/>", "operation", None),
            (SSS, None, "<A/>", "operation", None),
            (
                SSS,
                Some("urn:t/B"),
                "<A xmlns=\"urn:t\"/>",
                "SOAPAction",
                Some("urn:t/A"),
            ),
        ] {
            let reply = call(path, action, body);
            let f: Fault = fault_of(&reply);
            assert_eq!(f.code(), "InvalidParameters", "{body}");
            assert_eq!(f.message, message, "{body}");
            assert_eq!(f.method.as_deref(), method, "{body}");
            assert_eq!(f.actor.as_deref(), Some(&*format!("http://h{path}")));
            assert!(
                reply.summary.contains(" fault InvalidParameters "),
                "{}",
                reply.summary
            );
        }
        let junk = r.answer(
            &store,
            &SoapRequest {
                path: SSS,
                body: b"<a",
                action: None,
                base_url: "http://h",
                limits: Limits::REQUEST,
            },
        );
        assert_eq!(fault_of(&junk).message, "request");
        assert!(
            junk.summary.starts_with("- fault InvalidParameters "),
            "{}",
            junk.summary
        );
        let failed = call(SSS, None, "<A xmlns=\"urn:t\"><fail>1</fail></A>");
        let f = fault_of(&failed);
        assert_eq!(f.code(), "InternalServerError");
        assert!(!f.sender);
        assert!(failed.summary.ends_with(": asked to"), "{}", failed.summary);
    }
}
