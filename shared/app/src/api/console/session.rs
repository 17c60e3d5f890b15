//! The console's session: after one sign-in with the admin token, an HMAC-signed cookie with an expiry; a CSRF
//! token per session for every form; a same-origin check for every state-changing request.
//!
//! The signing key is derived from the admin token's SHA-256, so rotating the admin token (the one secret a
//! deployment already has) signs every session out; nothing new is stored.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const COOKIE: &str = "audience_sync_session";
/// How long a sign-in lasts.
pub const SESSION_SECS: i64 = 8 * 3600;
const VERSION: &str = "v1";

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    nonce: String,
    pub expires_at: i64,
}

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of every length: this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn key(admin_digest: &[u8; 32]) -> HmacSha256 {
    // Domain separation: the key is not the bare digest the bearer check compares.
    let mut k = hmac(admin_digest);
    k.update(b"audience-sync console session key v1");
    hmac(&k.finalize().into_bytes())
}

fn mac_hex(admin_digest: &[u8; 32], parts: &[&str]) -> String {
    let mut m = key(admin_digest);
    for p in parts {
        m.update(p.as_bytes());
        m.update(b"\n");
    }
    hex::encode(m.finalize().into_bytes())
}

fn verify(admin_digest: &[u8; 32], parts: &[&str], given_hex: &str) -> bool {
    let Ok(given) = hex::decode(given_hex) else {
        return false;
    };
    let mut m = key(admin_digest);
    for p in parts {
        m.update(p.as_bytes());
        m.update(b"\n");
    }
    m.verify_slice(&given).is_ok()
}

impl Session {
    /// A new session (256 random bits) expiring `SESSION_SECS` from `now`.
    pub fn start(now: DateTime<Utc>) -> Session {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Session {
            nonce: hex::encode(bytes),
            expires_at: now.timestamp() + SESSION_SECS,
        }
    }

    /// The cookie's value: `v1.<expiry>.<nonce>.<mac>`.
    pub fn cookie_value(&self, admin_digest: &[u8; 32]) -> String {
        let exp = self.expires_at.to_string();
        let mac = mac_hex(admin_digest, &[VERSION, &exp, &self.nonce]);
        format!("{VERSION}.{exp}.{}.{mac}", self.nonce)
    }

    /// `Set-Cookie` for this session: HttpOnly, Secure, SameSite=Strict, scoped to the console.
    pub fn set_cookie(&self, admin_digest: &[u8; 32]) -> String {
        format!(
            "{COOKIE}={}; Path=/console; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict",
            self.cookie_value(admin_digest)
        )
    }

    /// Parses and verifies a cookie value; `None` when tampered, signed with another key, or expired.
    pub fn verify(value: &str, admin_digest: &[u8; 32], now: DateTime<Utc>) -> Option<Session> {
        let mut it = value.split('.');
        let (v, exp, nonce, mac) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || v != VERSION || nonce.len() != 64 {
            return None;
        }
        if !verify(admin_digest, &[VERSION, exp, nonce], mac) {
            return None;
        }
        let expires_at: i64 = exp.parse().ok()?;
        (now.timestamp() < expires_at).then(|| Session {
            nonce: nonce.to_string(),
            expires_at,
        })
    }

    /// The CSRF token of this session (forms carry it in the hidden field `csrf`).
    pub fn csrf_token(&self, admin_digest: &[u8; 32]) -> String {
        mac_hex(admin_digest, &["csrf", &self.nonce])
    }

    pub fn csrf_ok(&self, admin_digest: &[u8; 32], given: Option<&str>) -> bool {
        given.is_some_and(|g| verify(admin_digest, &["csrf", &self.nonce], g))
    }
}

/// `Set-Cookie` that removes the session (sign-out).
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// The session cookie's value from a `Cookie` header.
pub fn cookie_from_header(header: Option<&str>) -> Option<&str> {
    header?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether a state-changing request came from the console's own pages. Browsers send `Sec-Fetch-Site` (all
/// current ones) and `Origin` on POSTs: a cross-site value of either is refused. A request with neither
/// (curl, old browsers) still needs the session cookie and the CSRF token.
pub fn same_origin(sec_fetch_site: Option<&str>, origin: Option<&str>, host: Option<&str>) -> bool {
    if let Some(site) = sec_fetch_site
        && !matches!(site.trim(), "same-origin" | "none")
    {
        return false;
    }
    match (origin.map(str::trim), host.map(str::trim)) {
        (None, _) => true,
        // A sandboxed or privacy-stripped origin.
        (Some("null"), _) => false,
        (Some(o), Some(h)) => url::Url::parse(o)
            .ok()
            .map(|u| {
                let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!("{}{port}", u.host_str().unwrap_or_default()).eq_ignore_ascii_case(h)
            })
            .unwrap_or(false),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
    }

    #[test]
    fn a_session_verifies_until_it_expires_and_only_under_its_key() {
        let key = [7u8; 32];
        let s = Session::start(at(1_000));
        let v = s.cookie_value(&key);
        assert_eq!(Session::verify(&v, &key, at(1_001)), Some(s.clone()));
        assert_eq!(Session::verify(&v, &key, at(1_000 + SESSION_SECS)), None);
        // A rotated admin token signs everyone out.
        assert_eq!(Session::verify(&v, &[8u8; 32], at(1_001)), None);
    }

    #[test]
    fn a_tampered_cookie_is_refused() {
        let key = [7u8; 32];
        let s = Session::start(at(1_000));
        let v = s.cookie_value(&key);
        let later = v.replacen(
            &s.expires_at.to_string(),
            &(s.expires_at + 9999).to_string(),
            1,
        );
        assert_eq!(Session::verify(&later, &key, at(1_001)), None);
        assert_eq!(Session::verify(&format!("{v}.x"), &key, at(1_001)), None);
        assert_eq!(Session::verify("v1.1.2.3", &key, at(0)), None);
        assert_eq!(Session::verify("", &key, at(0)), None);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let key = [7u8; 32];
        let a = Session::start(at(1_000));
        let b = Session::start(at(1_000));
        let ta = a.csrf_token(&key);
        assert!(a.csrf_ok(&key, Some(&ta)));
        assert!(!b.csrf_ok(&key, Some(&ta)));
        assert!(!a.csrf_ok(&key, None));
        assert!(!a.csrf_ok(&key, Some("zz")));
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let h = Some("localhost:8080");
        assert!(same_origin(
            Some("same-origin"),
            Some("http://localhost:8080"),
            h
        ));
        assert!(same_origin(None, None, h));
        assert!(!same_origin(Some("cross-site"), None, h));
        assert!(!same_origin(Some("same-site"), None, h));
        assert!(!same_origin(None, Some("http://127.0.0.1:9999"), h));
        assert!(!same_origin(None, Some("null"), h));
        assert!(!same_origin(None, Some("http://localhost:8080"), None));
    }

    #[test]
    fn the_cookie_is_read_from_a_cookie_header() {
        assert_eq!(
            cookie_from_header(Some("a=b; audience_sync_session=v1.x; c=d")),
            Some("v1.x")
        );
        assert_eq!(cookie_from_header(Some("a=b")), None);
        assert_eq!(cookie_from_header(None), None);
    }
}
