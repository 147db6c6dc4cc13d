//! Cookies a WSUS server hands out (MS-WSUSSS 2.2.4.7-8; MS-WUSP's are
//! alike) are opaque to the client and must be unforgeable: the server
//! seals its own bytes with an HMAC-SHA256 under a secret only it holds,
//! and later opens what a client sends back. What the bytes say is each
//! protocol's business.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes of the MAC a sealed cookie ends with.
pub const MAC_LEN: usize = 32;

/// A server's cookie secret.
#[derive(Clone)]
pub struct CookieKey {
    secret: [u8; 32],
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    pub fn new(secret: [u8; 32]) -> CookieKey {
        CookieKey { secret }
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes keys of any length")
    }

    /// `payload` followed by its MAC.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut m = self.mac();
        m.update(payload);
        let mut out = Vec::with_capacity(payload.len() + MAC_LEN);
        out.extend_from_slice(payload);
        out.extend_from_slice(&m.finalize().into_bytes());
        out
    }

    /// Rule: a sealed cookie's last [`MAC_LEN`] bytes are the HMAC-SHA256
    /// of everything before them under this key (compared in constant
    /// time). The payload when they are; `None` otherwise (forged, altered,
    /// of another server, or too short).
    pub fn open<'a>(&self, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let at = sealed.len().checked_sub(MAC_LEN)?;
        let (payload, mac) = sealed.split_at(at);
        let mut m = self.mac();
        m.update(payload);
        m.verify_slice(mac).ok()?;
        Some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_cookies_open_only_unaltered_and_under_their_key() {
        let k = CookieKey::new([7; 32]);
        let sealed = k.seal(b"payload");
        assert_eq!(sealed.len(), 7 + MAC_LEN);
        assert_eq!(k.open(&sealed), Some(&b"payload"[..]));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(k.open(&bad), None, "byte {i} altered");
        }
        assert_eq!(CookieKey::new([8; 32]).open(&sealed), None);
        assert_eq!(k.open(&sealed[..MAC_LEN - 1]), None);
        assert_eq!(k.open(&k.seal(b"")), Some(&b""[..]));
    }
}
