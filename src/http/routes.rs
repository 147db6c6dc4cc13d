//! The routing table: which request paths the server answers and who
//! answers them.
//!
//! SOAP endpoints are keyed by path. IIS (and so Windows WSUS and its
//! clients) treats paths without regard to case, and Windows WSUS sends
//! some with a doubled leading slash, so a path is looked up lower-case
//! with at most one extra leading slash removed. Each endpoint is a
//! [`SoapService`]: one call in (body, SOAPAction, the URL the client
//! used), one reply out, run on the blocking pool with a store handle. An
//! endpoint that serves several operations dispatches on the SOAPAction
//! and the body's first element itself, as MS-WSUSSS does, so a second
//! protocol (MS-WUSP: `/ClientWebService/client.asmx`,
//! `/SimpleAuthWebService/SimpleAuth.asmx`,
//! `/ReportingWebService/ReportingWebService.asmx`) plugs in with
//! [`Routes::soap`] beside the MS-WSUSSS endpoints without touching them.
//!
//! `/Content/...` (case-insensitive, also with a doubled slash) is the
//! content tree, served by `super::content`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;
use crate::protocols::wsusss::Service;
use crate::protocols::wsusss::upstream::{SoapCall, SoapReply, Uss, UssOptions};
use crate::protocols::wusp::server::{
    CLIENT_PATH, REPORTING_PATH, REPORTING_WSDL_PATH, SIMPLE_AUTH_PATH,
};
use crate::protocols::wusp::{Call, Endpoint, Wusp, WuspOptions};
use crate::store::Store;

/// One SOAP call as the HTTP layer received it.
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
}

/// A SOAP endpoint. Called on a blocking thread with a store handle of
/// its own; must turn every failure into a SOAP fault (the reply's status
/// is 500 for faults, as SOAP over HTTP wants).
pub trait SoapService: Send + Sync + 'static {
    fn handle(&self, store: &Store, call: &SoapRequest<'_>) -> SoapReply;
}

/// An MS-WSUSSS web service (ServerSyncWebService or DssAuthWebService)
/// over the store's upstream role.
struct Wsusss {
    uss: Arc<Uss>,
    service: Service,
}

impl SoapService for Wsusss {
    fn handle(&self, store: &Store, call: &SoapRequest<'_>) -> SoapReply {
        self.uss.handle(
            store,
            &SoapCall {
                service: self.service,
                body: call.body,
                action: call.action,
                base_url: call.base_url,
            },
        )
    }
}

/// An MS-WUSP web service (client, SimpleAuth or reporting).
struct WuspService {
    wusp: Arc<Wusp>,
    endpoint: Endpoint,
}

impl SoapService for WuspService {
    fn handle(&self, store: &Store, call: &SoapRequest<'_>) -> SoapReply {
        let a = self.wusp.handle(
            store,
            &Call {
                endpoint: self.endpoint,
                body: call.body,
                action: call.action,
                base_url: call.base_url,
            },
        );
        SoapReply {
            status: a.status,
            version: match a.version {
                crate::soap::SoapVersion::V11 => crate::protocols::wsusss::SoapVersion::V11,
                crate::soap::SoapVersion::V12 => crate::protocols::wsusss::SoapVersion::V12,
            },
            body: a.body,
            summary: a.summary,
        }
    }
}

/// What a path leads to.
#[derive(Clone)]
pub(crate) enum Route {
    Soap {
        path: &'static str,
        service: Arc<dyn SoapService>,
    },
    Content,
}

/// The routing table.
#[derive(Clone, Default)]
pub struct Routes {
    soap: HashMap<String, (&'static str, Arc<dyn SoapService>)>,
    content: bool,
}

impl Routes {
    /// An empty table (every path 404).
    pub fn new() -> Routes {
        Routes::default()
    }

    /// The upstream server of `store`: the two MS-WSUSSS web services
    /// (creating the store's cookie secret on first use) and the content
    /// tree.
    pub fn wsusss(store: &Store, opts: UssOptions) -> Result<Routes> {
        let uss = Arc::new(Uss::open(store, opts)?);
        let mut routes = Routes::new();
        for service in [Service::ServerSync, Service::DssAuth] {
            routes = routes.soap(
                service.path(),
                Wsusss {
                    uss: uss.clone(),
                    service,
                },
            );
        }
        Ok(routes.content())
    }

    /// Adds the MS-WUSP web services of `store` (client, SimpleAuth,
    /// reporting under both of its paths), creating its cookie key on
    /// first use.
    pub fn wusp(self, store: &Store, opts: WuspOptions) -> Result<Routes> {
        let wusp = Arc::new(Wusp::open(store, opts)?);
        let mut routes = self;
        for (path, endpoint) in [
            (CLIENT_PATH, Endpoint::Client),
            (SIMPLE_AUTH_PATH, Endpoint::SimpleAuth),
            (REPORTING_PATH, Endpoint::Reporting),
            (REPORTING_WSDL_PATH, Endpoint::Reporting),
        ] {
            routes = routes.soap(
                path,
                WuspService {
                    wusp: wusp.clone(),
                    endpoint,
                },
            );
        }
        Ok(routes)
    }

    /// Adds a SOAP endpoint at `path` (`/Dir/File.asmx`).
    pub fn soap(mut self, path: &'static str, service: impl SoapService) -> Routes {
        self.soap
            .insert(path.to_ascii_lowercase(), (path, Arc::new(service)));
        self
    }

    /// Serves `/Content/XX/<SHA-1>.ext` from the store.
    pub fn content(mut self) -> Routes {
        self.content = true;
        self
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
        if let Some((path, service)) = self.soap.get(&key) {
            return Some(Route::Soap {
                path,
                service: service.clone(),
            });
        }
        if self.content && key.starts_with("/content/") {
            return Some(Route::Content);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::wsusss::SoapVersion;

    struct Echo;
    impl SoapService for Echo {
        fn handle(&self, _: &Store, call: &SoapRequest<'_>) -> SoapReply {
            SoapReply {
                status: 200,
                version: SoapVersion::V11,
                body: call.path.to_string(),
                summary: String::new(),
            }
        }
    }

    fn soap_path(r: &Routes, p: &str) -> Option<&'static str> {
        match r.find(p) {
            Some(Route::Soap { path, .. }) => Some(path),
            _ => None,
        }
    }

    #[test]
    fn paths_are_found_case_insensitively_with_one_or_two_slashes() {
        let sss = "/ServerSyncWebService/ServerSyncWebService.asmx";
        let auth = "/DssAuthWebService/DssAuthWebService.asmx";
        let r = Routes::new().soap(sss, Echo).soap(auth, Echo).content();
        assert_eq!(soap_path(&r, sss), Some(sss));
        assert_eq!(soap_path(&r, &format!("/{sss}")), Some(sss));
        assert_eq!(
            soap_path(&r, "/dssauthwebservice/dssauthwebservice.asmx"),
            Some(auth)
        );
        assert_eq!(soap_path(&r, &format!("//{sss}")), None);
        assert_eq!(soap_path(&r, "/ServerSyncWebService/"), None);
        assert!(matches!(r.find("//content/cd/x"), Some(Route::Content)));
        assert!(matches!(r.find("/Content/CD/x"), Some(Route::Content)));
        assert!(r.find("/contentx").is_none());
        assert!(r.find("/ClientWebService/client.asmx").is_none());
        // A second protocol plugs in beside.
        let r = r.soap("/ClientWebService/client.asmx", Echo);
        assert_eq!(
            soap_path(&r, "/clientwebservice/CLIENT.asmx"),
            Some("/ClientWebService/client.asmx")
        );
        assert_eq!(soap_path(&r, sss), Some(sss));
    }
}
