//! Console authentication: the password hash (Argon2id, stored per store),
//! sessions (random tokens held in memory, so a restart logs everyone
//! out), CSRF tokens, and the login rate limit.
//!
//! Rules:
//! - A password is 8 to 1024 characters.
//! - A session ends after [`SESSION_IDLE`] without a request or
//!   [`SESSION_MAX`] after login, whichever comes first.
//! - Every POST carries the session's CSRF token (the login form carries
//!   the pre-login token of its own cookie); tokens are compared in
//!   constant time.
//! - At most [`LOGIN_FAILURES`] failed logins per client address per
//!   [`LOGIN_WINDOW`]; beyond that logins are answered 429 until the
//!   window has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::{Error, Result};

pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
pub const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
pub const LOGIN_FAILURES: usize = 5;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Sessions held at once; the oldest goes when one more logs in.
const MAX_SESSIONS: usize = 1000;

/// Rule: a console password is 8 to 1024 characters.
pub fn check_password_rules(pw: &str) -> Result<()> {
    let n = pw.chars().count();
    if !(8..=1024).contains(&n) {
        return Err(Error::bad_argument(
            "console password",
            format!("{n} characters; a password has 8 to 1024"),
        ));
    }
    Ok(())
}

/// An Argon2id PHC string of `pw` with a fresh random salt.
pub fn hash_password(pw: &str) -> Result<String> {
    check_password_rules(pw)?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| Error::invalid("random number generator", e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::invalid("salt", e.to_string()))?;
    Ok(argon2::Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map_err(|e| Error::invalid("console password", e.to_string()))?
        .to_string())
}

/// Whether `pw` matches the PHC string (false for a malformed one).
pub fn verify_password(phc: &str, pw: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(pw.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// 32 random bytes as 64 hex digits.
pub fn random_token() -> Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| Error::invalid("random number generator", e.to_string()))?;
    Ok(hex::encode(b))
}

/// Equality that takes the same time wherever the first difference is.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    created: Instant,
    last: Instant,
    /// Messages shown once on the next page (after a POST's redirect).
    pub flash: Vec<String>,
}

/// The sessions of one console process.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session: (token, its CSRF token).
    pub fn create(&self) -> Result<(String, String)> {
        let token = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, s| alive(s, now));
        if m.len() >= MAX_SESSIONS
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(
            token.clone(),
            Session {
                csrf: csrf.clone(),
                created: now,
                last: now,
                flash: Vec::new(),
            },
        );
        Ok((token, csrf))
    }

    /// The live session of `token` (its clock restarted), flash taken.
    pub fn touch(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.get_mut(token)?;
        if !alive(s, now) {
            m.remove(token);
            return None;
        }
        s.last = now;
        let out = s.clone();
        s.flash.clear();
        Some(out)
    }

    pub fn flash(&self, token: &str, msg: String) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = m.get_mut(token) {
            s.flash.push(msg);
        }
    }

    pub fn remove(&self, token: &str) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(token);
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last) < SESSION_IDLE && now.duration_since(s.created) < SESSION_MAX
}

/// Failed logins per client address.
#[derive(Default)]
pub struct LoginLimiter {
    map: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl LoginLimiter {
    /// Ok, or the seconds to wait before the next attempt.
    pub fn check(&self, ip: IpAddr) -> std::result::Result<(), u64> {
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let v = m.entry(ip).or_default();
        v.retain(|t| now.duration_since(*t) < LOGIN_WINDOW);
        if v.len() >= LOGIN_FAILURES {
            let oldest = v.iter().min().copied().unwrap_or(now);
            let wait = LOGIN_WINDOW.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        Ok(())
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 10_000 {
            let now = Instant::now();
            m.retain(|_, v| v.iter().any(|t| now.duration_since(*t) < LOGIN_WINDOW));
        }
        m.entry(ip).or_default().push(Instant::now());
    }

    pub fn succeeded(&self, ip: IpAddr) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horsE"));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "fresh salt");
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn logins_are_limited_per_address() {
        let l = LoginLimiter::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..LOGIN_FAILURES {
            assert!(l.check(a).is_ok());
            l.failed(a);
        }
        assert!(l.check(a).is_err());
        assert!(l.check(b).is_ok());
    }

    #[test]
    fn sessions_carry_csrf_and_flash_once() {
        let s = Sessions::default();
        let (t, csrf) = s.create().unwrap();
        s.flash(&t, "hello".into());
        let got = s.touch(&t).unwrap();
        assert_eq!((got.csrf.as_str(), got.flash.len()), (csrf.as_str(), 1));
        assert!(s.touch(&t).unwrap().flash.is_empty());
        s.remove(&t);
        assert!(s.touch(&t).is_none());
        assert!(ct_eq("abc", "abc") && !ct_eq("abc", "abd") && !ct_eq("abc", "ab"));
    }
}
