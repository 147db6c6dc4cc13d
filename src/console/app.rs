//! The console's request handling, independent of the HTTP server: a
//! request in, a response out (run on the blocking pool: store reads and
//! Argon2 are synchronous).
//!
//! Rules:
//! - Every page but the login page and the embedded assets needs a live
//!   session; a GET without one is sent to `/login`, a POST is refused 403.
//! - Every POST needs the CSRF token of its session (the login form: the
//!   token of its own pre-login cookie), else 403 and nothing changes.
//! - Bound to a loopback address, the console answers only requests whose
//!   `Host` is `localhost` or an IP address (421 otherwise): a web page
//!   whose name was rebound to 127.0.0.1 cannot reach it.
//! - Actions open the store as its one writer and go through the same
//!   library calls (and journal) as `approve`, `unapprove` and `decline`.

use std::net::IpAddr;
use std::path::PathBuf;

use super::auth::{self, LoginLimiter, Sessions, ct_eq};
use super::html::{self, Frame, esc};
use super::pages::{self, Params};
use crate::error::Error;
use crate::store::Store;
use crate::store::deployments::{Action, Approval};

pub const SESSION_COOKIE: &str = "gapsync_session";
pub const LOGIN_COOKIE: &str = "gapsync_login";
/// Updates one action may name.
pub const MAX_ACTION_IDS: usize = 500;

/// The policy every response carries: only this server's own files, no
/// inline script or style, no framing, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const LOGO: &str = include_str!("assets/logo.svg");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// A request as the console sees it.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    /// The `Host` header (None: absent).
    pub host: Option<String>,
    pub cookies: Vec<(String, String)>,
    /// The urlencoded body of a POST.
    pub form: Params,
    pub peer: IpAddr,
}

impl Req {
    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `Cookie` header.
pub fn parse_cookies(h: &str) -> Vec<(String, String)> {
    h.split(';')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// A response.
pub struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Resp {
    fn html(status: u16, body: String) -> Resp {
        Resp {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
            headers: Vec::new(),
        }
    }
    fn redirect(to: &str) -> Resp {
        Resp {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
            headers: vec![("location", to.to_string())],
        }
    }
    fn header(mut self, name: &'static str, v: String) -> Resp {
        self.headers.push((name, v));
        self
    }
}

/// The console of one store.
pub struct App {
    pub root: PathBuf,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    /// Recorded as the administrator of approvals made here.
    pub admin_name: String,
    /// Cookies are `Secure` (served over TLS).
    pub tls: bool,
    /// Bound to a loopback address (the `Host` rule applies).
    pub loopback: bool,
}

impl App {
    pub fn handle(&self, req: &Req) -> Resp {
        let mut r = self.route(req);
        r.headers.push(("content-security-policy", CSP.to_string()));
        r.headers
            .push(("x-content-type-options", "nosniff".to_string()));
        r.headers
            .push(("referrer-policy", "no-referrer".to_string()));
        r.headers.push(("x-frame-options", "DENY".to_string()));
        if self.tls {
            r.headers
                .push(("strict-transport-security", "max-age=31536000".to_string()));
        }
        if !r.headers.iter().any(|(k, _)| *k == "cache-control") {
            r.headers.push(("cache-control", "no-store".to_string()));
        }
        r
    }

    fn cookie(&self, name: &str, value: &str) -> String {
        format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Strict{}",
            if self.tls { "; Secure" } else { "" }
        )
    }

    fn host_allowed(&self, req: &Req) -> bool {
        if !self.loopback {
            return true;
        }
        let Some(h) = req.host.as_deref() else {
            return false;
        };
        let name = if let Some(rest) = h.strip_prefix('[') {
            rest.split(']').next().unwrap_or("")
        } else {
            h.rsplit_once(':').map(|(n, _)| n).unwrap_or(h)
        };
        name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
    }

    fn route(&self, req: &Req) -> Resp {
        if !self.host_allowed(req) {
            return Resp::html(
                421,
                html::page(
                    "Wrong host",
                    None,
                    "<h1>Wrong host</h1>\n<p>Open the console at localhost or its IP address.</p>\n",
                ),
            );
        }
        let get = matches!(req.method, Method::Get | Method::Head);
        match (get, req.path.as_str()) {
            (true, "/assets/console.css") => return asset("text/css; charset=utf-8", CSS),
            (true, "/assets/console.js") => {
                return asset("text/javascript; charset=utf-8", JS);
            }
            (true, "/assets/logo.svg") => return asset("image/svg+xml", LOGO),
            (true, "/login") => return self.login_page(req, None, 200),
            (false, "/login") if req.method == Method::Post => return self.login(req),
            _ => {}
        }
        if !matches!(req.method, Method::Get | Method::Head | Method::Post) {
            return Resp::html(
                405,
                html::page("Not allowed", None, "<h1>Method not allowed</h1>\n"),
            )
            .header("allow", "GET, HEAD, POST".into());
        }
        let token = req.cookie(SESSION_COOKIE).unwrap_or("");
        let Some(session) = self.sessions.touch(token) else {
            if get {
                return Resp::redirect("/login");
            }
            return forbidden("You are not logged in (or the session ended). Log in again.");
        };
        if req.method == Method::Post {
            let sent = req.form.get("csrf").unwrap_or("");
            if !ct_eq(sent, &session.csrf) {
                return forbidden(
                    "The form's security token is missing or stale; nothing was changed. Reload the page and try again.",
                );
            }
            return match req.path.as_str() {
                "/logout" => {
                    self.sessions.remove(token);
                    Resp::redirect("/login").header(
                        "set-cookie",
                        format!("{}; Max-Age=0", self.cookie(SESSION_COOKIE, "")),
                    )
                }
                "/updates/action" => self.action(req, token),
                _ => not_found(),
            };
        }
        let store = match Store::open_read_only(&self.root) {
            Ok(s) => s,
            Err(e) => return server_error(&e),
        };
        let p = Params::parse(&req.query);
        let path = req.path.as_str();
        let (title, current, body) = match path {
            "/" => ("Overview", "/", pages::overview(&store)),
            "/updates" => (
                "Updates",
                "/updates",
                pages::updates(&store, &p, &session.csrf),
            ),
            "/computers" => ("Computers", "/computers", pages::computers(&store, &p)),
            "/compliance" => ("Compliance", "/compliance", pages::compliance(&store)),
            "/compliance.csv" => {
                return match pages::compliance_csv(&store) {
                    Ok(csv) => Resp {
                        status: 200,
                        content_type: "text/csv; charset=utf-8",
                        body: csv.into_bytes(),
                        headers: vec![(
                            "content-disposition",
                            "attachment; filename=\"compliance.csv\"".into(),
                        )],
                    },
                    Err(e) => server_error(&e),
                };
            }
            "/bundles" => ("Bundles", "/bundles", pages::bundles(&store)),
            _ => {
                if let Some(id) = path.strip_prefix("/updates/") {
                    match pages::update_detail(&store, id, &session.csrf) {
                        Err(Error::UnknownUpdate(_)) => return not_found(),
                        r => ("Update", "/updates", r),
                    }
                } else if let Some(id) = path.strip_prefix("/computers/") {
                    match pages::computer(&store, id) {
                        Ok(None) => return not_found(),
                        Ok(Some(b)) => ("Computer", "/computers", Ok(b)),
                        Err(e) => ("Computer", "/computers", Err(e)),
                    }
                } else {
                    return not_found();
                }
            }
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => return server_error(&e),
        };
        let info = store.info();
        let frame = Frame {
            server_name: &info.name,
            mode: info.mode.as_str(),
            csrf: &session.csrf,
            flash: &session.flash,
            current,
        };
        Resp::html(200, html::page(title, Some(&frame), &body))
    }

    fn login_page(&self, req: &Req, message: Option<&str>, status: u16) -> Resp {
        let (pre, set) = match req.cookie(LOGIN_COOKIE) {
            Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                (v.to_string(), false)
            }
            _ => match auth::random_token() {
                Ok(t) => (t, true),
                Err(e) => return server_error(&e),
            },
        };
        let r = Resp::html(
            status,
            html::page("Log in", None, &pages::login(&pre, message)),
        );
        if set {
            r.header("set-cookie", self.cookie(LOGIN_COOKIE, &pre))
        } else {
            r
        }
    }

    fn login(&self, req: &Req) -> Resp {
        if let Err(wait) = self.limiter.check(req.peer) {
            tracing::warn!(client = %req.peer, "console login refused: too many failed attempts");
            return self
                .login_page(
                    req,
                    Some(&format!(
                        "Too many failed logins from this address; try again in {wait} s."
                    )),
                    429,
                )
                .header("retry-after", wait.to_string());
        }
        let pre = req.cookie(LOGIN_COOKIE).unwrap_or("");
        let sent = req.form.get("csrf").unwrap_or("");
        if pre.is_empty() || !ct_eq(pre, sent) {
            return forbidden(
                "The login form's security token is missing or stale. Reload the page and try again.",
            );
        }
        let hash = match Store::open_read_only(&self.root).and_then(|s| s.console_password_hash()) {
            Ok(Some(h)) => h,
            Ok(None) => {
                return self.login_page(
                    req,
                    Some("No console password is set: run `gapsync console passwd`."),
                    403,
                );
            }
            Err(e) => return server_error(&e),
        };
        let pw = req
            .form
            .0
            .iter()
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.as_str());
        if !pw.is_some_and(|pw| auth::verify_password(&hash, pw)) {
            self.limiter.failed(req.peer);
            tracing::warn!(client = %req.peer, "console login failed: wrong password");
            return self.login_page(req, Some("Wrong password."), 401);
        }
        self.limiter.succeeded(req.peer);
        match self.sessions.create() {
            Ok((token, _)) => {
                tracing::info!(client = %req.peer, "console login");
                Resp::redirect("/").header("set-cookie", self.cookie(SESSION_COOKIE, &token))
            }
            Err(e) => server_error(&e),
        }
    }

    /// `POST /updates/action`: approve, unapprove or decline the `id`s.
    fn action(&self, req: &Req, token: &str) -> Resp {
        let f = &req.form;
        let back = f
            .get("back")
            .filter(|b| {
                b.starts_with('/') && !b.starts_with("//") && !b.contains(['\\', '\r', '\n'])
            })
            .unwrap_or("/updates")
            .to_string();
        let flash = |m: String| self.sessions.flash(token, m);
        let ids = f.all("id");
        if ids.is_empty() {
            flash("Nothing selected: tick one or more updates first.".into());
            return Resp::redirect(&back);
        }
        if ids.len() > MAX_ACTION_IDS {
            flash(format!(
                "{} updates selected; one action takes at most {MAX_ACTION_IDS}.",
                ids.len()
            ));
            return Resp::redirect(&back);
        }
        let op = f.get("op").unwrap_or("");
        let group = f.get("group").unwrap_or("");
        let action = match Action::parse(f.get("action").unwrap_or("install")) {
            Some(a) => a,
            None => {
                flash("Unknown action; choose install, uninstall or block.".into());
                return Resp::redirect(&back);
            }
        };
        let deadline = match f.get("deadline").map(deadline_input).transpose() {
            Ok(d) => d,
            Err(m) => {
                flash(m);
                return Resp::redirect(&back);
            }
        };
        if !matches!(op, "approve" | "unapprove" | "decline") {
            flash("Unknown operation.".into());
            return Resp::redirect(&back);
        }
        if op != "decline" && group.is_empty() {
            flash("Choose a group.".into());
            return Resp::redirect(&back);
        }
        let mut store = match Store::open_writer(&self.root) {
            Ok(s) => s,
            Err(e) => {
                flash(format!("Nothing changed: {e}"));
                return Resp::redirect(&back);
            }
        };
        let mut done = 0u64;
        let mut errors = Vec::new();
        for id in &ids {
            let r = match op {
                "approve" => store
                    .approve(&Approval {
                        update_id: id,
                        group,
                        action,
                        deadline: deadline.as_deref(),
                        admin_name: &self.admin_name,
                    })
                    .map(|_| ()),
                "unapprove" => store.unapprove(id, group).map(|_| ()),
                _ => store.decline(id).map(|_| ()),
            };
            match r {
                Ok(()) => done += 1,
                Err(e) => errors.push(e.to_string()),
            }
        }
        drop(store);
        let what = match op {
            "approve" => format!(
                "Approved {} for {group} ({}{})",
                crate::model::units::count(done, "update"),
                action.as_str(),
                deadline
                    .as_deref()
                    .map(|d| format!(", deadline {d}"))
                    .unwrap_or_default()
            ),
            "unapprove" => format!(
                "Removed the approval for {group} of {}",
                crate::model::units::count(done, "update")
            ),
            _ => format!("Declined {}", crate::model::units::count(done, "update")),
        };
        tracing::info!(client = %req.peer, "console: {what}; {} refused", errors.len());
        if done > 0 {
            flash(format!("{what}."));
        }
        for e in errors.iter().take(10) {
            flash(format!("Refused: {e}"));
        }
        if errors.len() > 10 {
            flash(format!("... and {} more refused.", errors.len() - 10));
        }
        Resp::redirect(&back)
    }
}

/// Rule: a deadline typed in the console is RFC 3339, or a UTC date and
/// time `YYYY-MM-DD HH:MM[:SS]` (`T` or a space between).
pub fn deadline_input(s: &str) -> Result<String, String> {
    let t = s.trim().replacen(' ', "T", 1);
    let candidate = match t.len() {
        16 => format!("{t}:00Z"),
        19 => format!("{t}Z"),
        _ => t,
    };
    crate::store::deployments::normalise_deadline(&candidate).map_err(|_| {
        format!(
            "Deadline {s:?} is not a date and time: write 2027-01-15T18:00:00Z (UTC) or 2027-01-15 18:00."
        )
    })
}

fn asset(content_type: &'static str, body: &str) -> Resp {
    Resp {
        status: 200,
        content_type,
        body: body.as_bytes().to_vec(),
        headers: vec![("cache-control", "no-cache".into())],
    }
}

fn forbidden(why: &str) -> Resp {
    Resp::html(
        403,
        html::page(
            "Refused",
            None,
            &format!(
                "<h1>Refused</h1>\n<p class=\"error\" role=\"alert\">{}</p>\n<p><a href=\"/\">Back to the console</a></p>\n",
                esc(why)
            ),
        ),
    )
}

fn not_found() -> Resp {
    Resp::html(
        404,
        html::page(
            "Not found",
            None,
            "<h1>Not found</h1>\n<p><a href=\"/\">Back to the console</a></p>\n",
        ),
    )
}

fn server_error(e: &Error) -> Resp {
    tracing::warn!("console: {e}");
    Resp::html(
        500,
        html::page(
            "Error",
            None,
            &format!(
                "<h1>Error</h1>\n<p class=\"error\" role=\"alert\">{}</p>\n<p><a href=\"/\">Back to the console</a></p>\n",
                esc(&e.to_string())
            ),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_typed_in_the_console() {
        assert_eq!(
            deadline_input("2027-01-15 18:00").unwrap(),
            "2027-01-15T18:00:00Z"
        );
        assert_eq!(
            deadline_input("2027-01-15T18:00:30").unwrap(),
            "2027-01-15T18:00:30Z"
        );
        assert_eq!(
            deadline_input("2027-01-15T18:00:00+02:00").unwrap(),
            "2027-01-15T16:00:00Z"
        );
        assert!(deadline_input("tomorrow").is_err());
        assert!(deadline_input("2027-13-15 18:00").is_err());
    }

    #[test]
    fn cookies_parse() {
        let c = parse_cookies("a=1; gapsync_session=xyz ;b");
        assert_eq!(
            c,
            vec![
                ("a".into(), "1".into()),
                ("gapsync_session".into(), "xyz".into())
            ]
        );
    }

    fn app(loopback: bool) -> App {
        App {
            root: PathBuf::from("/nonexistent"),
            sessions: Sessions::default(),
            limiter: LoginLimiter::default(),
            admin_name: "t".into(),
            tls: false,
            loopback,
        }
    }

    fn get(path: &str, host: &str) -> Req {
        Req {
            method: Method::Get,
            path: path.into(),
            query: String::new(),
            host: Some(host.into()),
            cookies: Vec::new(),
            form: Params(Vec::new()),
            peer: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn loopback_consoles_refuse_rebound_host_names() {
        let a = app(true);
        assert_eq!(a.handle(&get("/login", "127.0.0.1:8080")).status, 200);
        assert_eq!(a.handle(&get("/login", "localhost:8080")).status, 200);
        assert_eq!(a.handle(&get("/login", "[::1]:8080")).status, 200);
        assert_eq!(a.handle(&get("/login", "evil.example:8080")).status, 421);
        assert_eq!(
            app(false).handle(&get("/login", "console.corp")).status,
            200
        );
    }

    #[test]
    fn pages_need_a_session_and_carry_the_policy() {
        let a = app(true);
        let r = a.handle(&get("/updates", "127.0.0.1"));
        assert_eq!(r.status, 303);
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| *k == "content-security-policy" && v == CSP)
        );
        let mut post = get("/updates/action", "127.0.0.1");
        post.method = Method::Post;
        assert_eq!(a.handle(&post).status, 403);
    }
}
