//! MS-WUSP cookies (2.2.3.4, 2.2.3.5): the authorization cookie of
//! GetAuthorizationCookie and the client cookie of GetCookie and every
//! later call. Both are opaque to the client: their state is sealed with
//! ChaCha20-Poly1305 under a per-store key that never leaves the store.
//!
//! Layout: `key id (u32 BE) || nonce (12) || AEAD(kind || JSON state)`,
//! the additional data `gapsync-wusp-v1 || key id`. Rules:
//! - a cookie opens only under the key it names, unaltered, of the kind
//!   expected (InvalidCookie otherwise: a rotated key, another store, a
//!   forged or truncated cookie);
//! - the expiry inside the cookie is authoritative (the clear-text
//!   `Expiration` is a copy for the client).

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::wusp::COOKIE_KEYS;

const AAD_PREFIX: &[u8] = b"gapsync-wusp-v1";
const KIND_AUTH: u8 = 1;
const KIND_CLIENT: u8 = 2;

/// What the authorization cookie carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// Server id of the store that issued it.
    pub server: String,
    pub client_id: String,
    pub dns_name: String,
    /// Client-side targeting: the group names the client sent.
    pub groups: Vec<String>,
    /// Unix milliseconds.
    pub expires: i64,
}

/// What the client cookie carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    pub server: String,
    pub client_id: String,
    /// Client-side targeting: the group names of the authorization cookie.
    pub groups: Vec<String>,
    /// Unix milliseconds; the client renews the cookie after it.
    pub expires: i64,
    /// The client's protocol version (major, minor).
    pub protocol: (u32, u32),
    /// The configuration's LastChange (unix ms) when the cookie was issued.
    pub config_change: i64,
    /// The group the computer was in when the mark was set (server-side
    /// targeting; a move resets the mark).
    pub group: Option<String>,
    /// The catalog generation of the last answer (0: none yet).
    pub mark: i64,
}

/// The store's cookie keys: the newest seals, any of them opens.
pub struct Keys {
    keys: Vec<(u32, LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys)", self.keys.len())
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    id: u32,
    key: String,
}

fn fresh_key(rng: &SystemRandom) -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    rng.fill(&mut k).map_err(|_| {
        Error::invalid(
            "random number generator",
            "no random numbers for the cookie key",
        )
    })?;
    Ok(k)
}

impl Keys {
    /// The store's keys, creating the first on first use.
    pub fn load(store: &Store) -> Result<Keys> {
        let rng = SystemRandom::new();
        let text = store.config_value_or_init(COOKIE_KEYS, || {
            fresh_key(&rng)
                .map(|k| {
                    serde_json::to_string(&[StoredKey {
                        id: 1,
                        key: hex::encode(k),
                    }])
                    .unwrap_or_default()
                })
                .unwrap_or_default()
        })?;
        Self::from_config(&text)
    }

    /// Keys from the stored JSON.
    pub fn from_config(text: &str) -> Result<Keys> {
        let bad = |why: &str| Error::Corrupt(format!("config {COOKIE_KEYS}: {why}"));
        let stored: Vec<StoredKey> =
            serde_json::from_str(text).map_err(|_| bad("not a JSON list of keys"))?;
        let mut keys = Vec::new();
        for s in stored {
            let raw = hex::decode(&s.key).map_err(|_| bad("a key is not hex"))?;
            let k = UnboundKey::new(&CHACHA20_POLY1305, &raw)
                .map_err(|_| bad("a key is not 32 bytes"))?;
            keys.push((s.id, LessSafeKey::new(k)));
        }
        if keys.is_empty() {
            return Err(bad("no key"));
        }
        Ok(Keys {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// Replaces the store's keys with a fresh one: every cookie issued
    /// before becomes InvalidCookie. Returns the new key's id.
    pub fn rotate(store: &Store) -> Result<u32> {
        let next = store
            .config_value(COOKIE_KEYS)?
            .and_then(|t| serde_json::from_str::<Vec<StoredKey>>(&t).ok())
            .and_then(|v| v.iter().map(|k| k.id).max())
            .unwrap_or(0)
            .wrapping_add(1);
        let k = fresh_key(&SystemRandom::new())?;
        let json = serde_json::to_string(&[StoredKey {
            id: next,
            key: hex::encode(k),
        }])
        .unwrap_or_default();
        store.set_config_value(COOKIE_KEYS, &json)?;
        Ok(next)
    }

    fn seal(&self, kind: u8, json: &[u8]) -> Vec<u8> {
        let (id, key) = self
            .keys
            .iter()
            .max_by_key(|(id, _)| *id)
            .unwrap_or(&self.keys[0]);
        let mut nonce = [0u8; 12];
        // SystemRandom fails only where no OS randomness exists at all; a
        // zero nonce then is still unique per key only by luck, so the
        // cookie is sealed anyway (it never protects secrets, only state).
        let _ = self.rng.fill(&mut nonce);
        let mut data = Vec::with_capacity(json.len() + 17);
        data.push(kind);
        data.extend_from_slice(json);
        let mut aad = AAD_PREFIX.to_vec();
        aad.extend_from_slice(&id.to_be_bytes());
        let sealed = key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut data,
        );
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&nonce);
        if sealed.is_ok() {
            out.extend_from_slice(&data);
        }
        out
    }

    /// Rule: a cookie opens only under the key its first four bytes name,
    /// unaltered (Poly1305 tag), and of the kind asked.
    fn open(&self, kind: u8, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 4 + 12 + 16 + 1 {
            return None;
        }
        let id = u32::from_be_bytes(sealed[..4].try_into().ok()?);
        let (_, key) = self.keys.iter().find(|(k, _)| *k == id)?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed[4..16]).ok()?;
        let mut data = sealed[16..].to_vec();
        let mut aad = AAD_PREFIX.to_vec();
        aad.extend_from_slice(&id.to_be_bytes());
        let plain = key.open_in_place(nonce, Aad::from(aad), &mut data).ok()?;
        let (&k, json) = plain.split_first()?;
        (k == kind).then(|| json.to_vec())
    }

    pub fn seal_auth(&self, s: &AuthState) -> Vec<u8> {
        self.seal(KIND_AUTH, &serde_json::to_vec(s).unwrap_or_default())
    }
    pub fn open_auth(&self, sealed: &[u8]) -> Option<AuthState> {
        serde_json::from_slice(&self.open(KIND_AUTH, sealed)?).ok()
    }
    pub fn seal_client(&self, s: &ClientState) -> Vec<u8> {
        self.seal(KIND_CLIENT, &serde_json::to_vec(s).unwrap_or_default())
    }
    pub fn open_client(&self, sealed: &[u8]) -> Option<ClientState> {
        serde_json::from_slice(&self.open(KIND_CLIENT, sealed)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(id: u32, byte: u8) -> Keys {
        Keys::from_config(&format!(
            r#"[{{"id":{id},"key":"{}"}}]"#,
            hex::encode([byte; 32])
        ))
        .unwrap()
    }

    fn state() -> ClientState {
        ClientState {
            server: "s".into(),
            client_id: "c".into(),
            groups: vec!["g".into()],
            expires: 5,
            protocol: (2, 90),
            config_change: 1,
            group: None,
            mark: 7,
        }
    }

    #[test]
    fn cookies_open_only_unaltered_of_their_kind_under_their_key() {
        let k = keys(1, 7);
        let sealed = k.seal_client(&state());
        assert_eq!(k.open_client(&sealed), Some(state()));
        assert_eq!(
            k.open_auth(&sealed),
            None,
            "a client cookie is no auth cookie"
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(k.open_client(&bad), None, "byte {i}");
        }
        assert_eq!(k.open_client(&sealed[..sealed.len() - 1]), None);
        assert_eq!(keys(1, 8).open_client(&sealed), None, "another key");
        assert_eq!(keys(2, 7).open_client(&sealed), None, "a rotated key id");
        // Two seals of the same state differ (fresh nonce).
        assert_ne!(k.seal_client(&state()), sealed);
        assert!(Keys::from_config("[]").is_err());
        assert!(Keys::from_config(r#"[{"id":1,"key":"00"}]"#).is_err());
    }

    #[test]
    fn rotation_invalidates_every_cookie() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::init(&d.path().join("s"), "t", crate::store::Mode::Autonomous).unwrap();
        let k = Keys::load(&s).unwrap();
        let sealed = k.seal_client(&state());
        assert_eq!(Keys::load(&s).unwrap().open_client(&sealed), Some(state()));
        Keys::rotate(&s).unwrap();
        assert_eq!(Keys::load(&s).unwrap().open_client(&sealed), None);
    }
}
