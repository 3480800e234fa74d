//! Credentials bound to tenants and roles (the `auth` block, docs/security.md).
//!
//! ```text
//!  request ──► group of the route (open | push | read | admin)
//!          ──► credential: `Authorization: Bearer <token>` or `Basic <user:password>`,
//!              checked against the configured argon2id hashes (a verified secret is
//!              remembered by its SHA-256, so only the first request pays for argon2)
//!          ──► role: push → push routes; read → query routes; admin → everything
//!          ──► tenants: every id of `X-Scope-OrgID` must be one the credential holds; a
//!              request without the header from a one-tenant credential gets that tenant
//!          ──► the route, with the credential's name in the request extensions
//! ```
//!
//! Failures answer 401 (no or unknown credential) or 403 (a known credential outside its
//! role or tenants) with a fixed body that does not say which part was wrong; a client
//! address with too many failures in a minute gets 429 without any check. Loki has no
//! authentication at all: with `auth.enabled: false` (the default) nothing here runs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Push logs (Promtail, Alloy, OpenTelemetry collectors).
    Push,
    /// Query, labels, tail, rule and alert listings (Grafana, logcli).
    Read,
    /// Everything: also rule changes, deletes, flush and `/config`.
    Admin,
}

/// One credential of the `auth.credentials` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// Appears in logs, metrics and the delete audit record; never the secret.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Tenants it may act for; `*` means every tenant.
    pub tenants: Vec<String>,
    /// argon2id hash of a bearer token, as `tovlog hash-secret` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    /// HTTP basic auth user name (with `password_hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// argon2id hash of the basic auth password, as `tovlog hash-secret` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// The `auth` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require a credential on every request except the open ones. Default `false` (Loki's
    /// behaviour: anyone who reaches the port is trusted).
    pub enabled: bool,
    /// The credentials.
    pub credentials: Vec<Credential>,
    /// Serve `/metrics` without a credential. Default `true`.
    pub open_metrics: bool,
    /// Serve `/ready` without a credential. Default `true`.
    pub open_ready: bool,
    /// Failed attempts one client address may make per minute; past it, 429 until the
    /// minute is over. Default `10`.
    pub max_failures_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            credentials: Vec::new(),
            open_metrics: true,
            open_ready: true,
            max_failures_per_minute: 10,
        }
    }
}

impl AuthConfig {
    /// Reject a configuration that cannot work, naming the credential.
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled && self.credentials.is_empty() {
            return Err("auth.enabled is true but auth.credentials is empty".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut users = std::collections::HashSet::new();
        for c in &self.credentials {
            let at = format!("auth.credentials[{}]", c.name);
            if c.name.trim().is_empty() {
                return Err("auth.credentials: every credential needs a name".into());
            }
            if !names.insert(c.name.as_str()) {
                return Err(format!("{at}: the name is used twice"));
            }
            if c.tenants.is_empty() || c.tenants.iter().any(|t| t.trim().is_empty()) {
                return Err(format!(
                    "{at}: tenants must list at least one tenant (or \"*\")"
                ));
            }
            match (&c.token_hash, &c.username, &c.password_hash) {
                (None, None, None) => {
                    return Err(format!(
                        "{at}: needs token_hash, or username and password_hash"
                    ))
                }
                (_, Some(_), None) | (_, None, Some(_)) => {
                    return Err(format!("{at}: username and password_hash go together"))
                }
                _ => {}
            }
            for hash in [&c.token_hash, &c.password_hash].into_iter().flatten() {
                let parsed = PasswordHash::new(hash).map_err(|e| {
                    format!("{at}: not a hash printed by `tovlog hash-secret`: {e}")
                })?;
                if parsed.algorithm.as_str() != "argon2id" {
                    return Err(format!("{at}: only argon2id hashes are accepted"));
                }
            }
            if let Some(u) = &c.username {
                if u.is_empty() || u.contains(':') {
                    return Err(format!("{at}: username must be non-empty without ':'"));
                }
                if !users.insert(u.as_str()) {
                    return Err(format!("{at}: username {u:?} is used twice"));
                }
            }
        }
        Ok(())
    }
}

/// The argon2id hash of `secret` with a random salt, in PHC form (`tovlog hash-secret`).
pub fn hash_secret(secret: &str) -> anyhow::Result<String> {
    // The salt comes from the operating system's random source.
    let hash: PasswordHash = Argon2::default()
        .hash_password(secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    Ok(hash.to_string())
}

/// Which credentials a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// No credential (`/ready`, `/metrics` when open, CORS preflights).
    Open,
    /// Push routes.
    Push,
    /// Queries and listings.
    Read,
    /// Changes and operator endpoints.
    Admin,
}

/// The group of a request by method and path.
pub fn group(method: &Method, path: &str, config: &AuthConfig) -> Group {
    match path {
        "/ready" if config.open_ready => return Group::Open,
        "/metrics" if config.open_metrics => return Group::Open,
        "/loki/api/v1/push" | "/api/prom/push" | "/otlp/v1/logs" => {
            // A browser's CORS preflight carries no credentials.
            return if method == Method::OPTIONS {
                Group::Open
            } else {
                Group::Push
            };
        }
        "/flush" | "/config" | "/metrics" | "/ready" => return Group::Admin,
        _ => {}
    }
    let admin_prefix = ["/loki/api/v1/delete", "/loki/api/v1/cache/", "/compactor/"];
    if admin_prefix.iter().any(|p| path.starts_with(p)) {
        return Group::Admin;
    }
    let rules = path.starts_with("/loki/api/v1/rules") || path.starts_with("/api/prom/rules");
    if rules && method != Method::GET && method != Method::HEAD {
        return Group::Admin;
    }
    Group::Read
}

/// The authenticated caller, in the request extensions of every route behind auth.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The credential's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Failure {
    Missing,
    Invalid,
    Forbidden,
    RateLimited,
}

impl Failure {
    const ALL: [Failure; 4] = [
        Failure::Missing,
        Failure::Invalid,
        Failure::Forbidden,
        Failure::RateLimited,
    ];

    fn label(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Invalid => "invalid",
            Failure::Forbidden => "forbidden",
            Failure::RateLimited => "rate_limited",
        }
    }
}

/// Most verified secrets remembered; past it the oldest half is forgotten.
const VERIFIED_CAPACITY: usize = 4096;
/// Most client addresses whose failures are counted at once.
const FAILURE_TRACKED: usize = 65_536;

/// The checker shared by every request.
pub struct Auth {
    config: AuthConfig,
    /// SHA-256 of a secret already verified → index of its credential. Only successes are
    /// kept, so a wrong secret always pays for argon2 (and counts as a failure).
    verified: Mutex<HashMap<[u8; 32], usize>>,
    /// Failures per client address in the current minute.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    failure_counts: [AtomicU64; 4],
    /// Requests let through, per credential.
    allowed: Vec<AtomicU64>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("enabled", &self.config.enabled)
            .field("credentials", &self.config.credentials.len())
            .finish()
    }
}

enum Presented {
    Bearer(String),
    Basic(String, String),
}

impl Auth {
    /// The checker for a validated `config`.
    pub fn new(config: AuthConfig) -> Arc<Auth> {
        let allowed = config
            .credentials
            .iter()
            .map(|_| AtomicU64::new(0))
            .collect();
        Arc::new(Auth {
            config,
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            failure_counts: Default::default(),
            allowed,
        })
    }

    /// Is authentication on?
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn presented(req: &Request) -> Option<Presented> {
        let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, rest) = value.trim().split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Presented::Bearer(rest.to_string()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            return Some(Presented::Basic(user.to_string(), password.to_string()));
        }
        None
    }

    /// The credential a secret belongs to, verifying argon2 hashes off the async runtime.
    async fn identify(self: &Arc<Self>, presented: Presented) -> Option<usize> {
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            match &presented {
                Presented::Bearer(t) => {
                    h.update(b"bearer\0");
                    h.update(t.as_bytes());
                }
                Presented::Basic(u, p) => {
                    h.update(b"basic\0");
                    h.update(u.as_bytes());
                    h.update(b"\0");
                    h.update(p.as_bytes());
                }
            }
            h.finalize().into()
        };
        if let Some(i) = self.verified.lock().get(&key) {
            return Some(*i);
        }
        let this = self.clone();
        let found = tokio::task::spawn_blocking(move || {
            let argon = Argon2::default();
            let check = |hash: &str, secret: &str| {
                PasswordHash::new(hash)
                    .is_ok_and(|h| argon.verify_password(secret.as_bytes(), &h).is_ok())
            };
            this.config
                .credentials
                .iter()
                .position(|c| match &presented {
                    Presented::Bearer(t) => c.token_hash.as_deref().is_some_and(|h| check(h, t)),
                    Presented::Basic(u, p) => {
                        c.username.as_deref() == Some(u.as_str())
                            && c.password_hash.as_deref().is_some_and(|h| check(h, p))
                    }
                })
        })
        .await
        .ok()
        .flatten()?;
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(key, found);
        Some(found)
    }

    fn rate_limited(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock();
        failures.get(&ip).is_some_and(|(n, since)| {
            since.elapsed() < Duration::from_secs(60) && *n >= self.config.max_failures_per_minute
        })
    }

    fn fail(&self, ip: IpAddr, failure: Failure, path: &str, who: Option<&str>) -> Response {
        if let Some(i) = Failure::ALL.iter().position(|f| *f == failure) {
            self.failure_counts[i].fetch_add(1, Ordering::Relaxed);
        }
        if failure != Failure::RateLimited {
            let mut failures = self.failures.lock();
            if failures.len() >= FAILURE_TRACKED {
                failures.retain(|_, (_, since)| since.elapsed() < Duration::from_secs(60));
                if failures.len() >= FAILURE_TRACKED {
                    failures.clear();
                }
            }
            let entry = failures.entry(ip).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= Duration::from_secs(60) {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
        tracing::info!(client = %ip, path, credential = who.unwrap_or("-"), reason = failure.label(), "request refused");
        let (status, body) = match failure {
            Failure::Missing | Failure::Invalid => (StatusCode::UNAUTHORIZED, "unauthorized\n"),
            Failure::Forbidden => (StatusCode::FORBIDDEN, "forbidden\n"),
            Failure::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentication attempts; retry in a minute\n",
            ),
        };
        let mut resp = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tovlog\", charset=\"UTF-8\""),
            );
        }
        resp
    }

    /// Prometheus text of the auth counters (appended to `/metrics`).
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if !self.config.enabled {
            return out;
        }
        out.push_str("# HELP tovlog_auth_failures_total Requests refused by authentication, by reason.\n# TYPE tovlog_auth_failures_total counter\n");
        for (f, n) in Failure::ALL.iter().zip(&self.failure_counts) {
            let _ = writeln!(
                out,
                "tovlog_auth_failures_total{{reason=\"{}\"}} {}",
                f.label(),
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP tovlog_auth_requests_total Requests let through, by credential.\n# TYPE tovlog_auth_requests_total counter\n");
        for (c, n) in self.config.credentials.iter().zip(&self.allowed) {
            let _ = writeln!(
                out,
                "tovlog_auth_requests_total{{credential=\"{}\"}} {}",
                c.name.replace('\\', "\\\\").replace('"', "\\\""),
                n.load(Ordering::Relaxed)
            );
        }
        out
    }
}

fn holds(credential: &Credential, tenant: &str) -> bool {
    credential.tenants.iter().any(|t| t == "*" || t == tenant)
}

/// The middleware: see the module doc.
pub async fn middleware(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    if !auth.config.enabled {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let needed = group(req.method(), &path, &auth.config);
    if needed == Group::Open {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<super::tls::ClientAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0 .0.ip());
    if auth.rate_limited(ip) {
        return auth.fail(ip, Failure::RateLimited, &path, None);
    }
    if !req.headers().contains_key(header::AUTHORIZATION) {
        return auth.fail(ip, Failure::Missing, &path, None);
    }
    let Some(presented) = Auth::presented(&req) else {
        return auth.fail(ip, Failure::Invalid, &path, None);
    };
    let Some(index) = auth.identify(presented).await else {
        return auth.fail(ip, Failure::Invalid, &path, None);
    };
    let Some(credential) = auth.config.credentials.get(index) else {
        return auth.fail(ip, Failure::Invalid, &path, None);
    };
    let role_ok = match needed {
        Group::Open => true,
        Group::Push => matches!(credential.role, Role::Push | Role::Admin),
        Group::Read => matches!(credential.role, Role::Read | Role::Admin),
        Group::Admin => credential.role == Role::Admin,
    };
    if !role_ok {
        return auth.fail(ip, Failure::Forbidden, &path, Some(&credential.name));
    }
    let org = req
        .headers()
        .get("x-scope-orgid")
        .map(|v| v.to_str().map(|s| s.trim().to_string()));
    match org {
        Some(Ok(ids)) if !ids.is_empty() => {
            if !ids.split('|').all(|t| holds(credential, t.trim())) {
                return auth.fail(ip, Failure::Forbidden, &path, Some(&credential.name));
            }
        }
        Some(Err(_)) => return auth.fail(ip, Failure::Forbidden, &path, Some(&credential.name)),
        // No (or an empty) header: a credential of one tenant acts for it.
        _ => {
            if let [only] = credential.tenants.as_slice() {
                if only != "*" {
                    if let Ok(v) = HeaderValue::from_str(only) {
                        req.headers_mut().insert("x-scope-orgid", v);
                    }
                }
            }
        }
    }
    if let Some(n) = auth.allowed.get(index) {
        n.fetch_add(1, Ordering::Relaxed);
    }
    req.extensions_mut().insert(Caller {
        name: credential.name.clone(),
        role: credential.role,
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            enabled: true,
            ..AuthConfig::default()
        }
    }

    #[test]
    fn routes_fall_in_their_groups() {
        let c = config();
        let g = |m: Method, p: &str| group(&m, p, &c);
        assert_eq!(g(Method::POST, "/loki/api/v1/push"), Group::Push);
        assert_eq!(g(Method::OPTIONS, "/loki/api/v1/push"), Group::Open);
        assert_eq!(g(Method::POST, "/otlp/v1/logs"), Group::Push);
        assert_eq!(g(Method::GET, "/loki/api/v1/query_range"), Group::Read);
        assert_eq!(g(Method::GET, "/loki/api/v1/tail"), Group::Read);
        assert_eq!(g(Method::GET, "/loki/api/v1/rules"), Group::Read);
        assert_eq!(g(Method::POST, "/loki/api/v1/rules/ns"), Group::Admin);
        assert_eq!(g(Method::DELETE, "/api/prom/rules/ns/g"), Group::Admin);
        assert_eq!(g(Method::POST, "/loki/api/v1/delete"), Group::Admin);
        assert_eq!(g(Method::GET, "/loki/api/v1/delete"), Group::Admin);
        assert_eq!(g(Method::POST, "/flush"), Group::Admin);
        assert_eq!(g(Method::GET, "/config"), Group::Admin);
        assert_eq!(g(Method::GET, "/metrics"), Group::Open);
        assert_eq!(g(Method::GET, "/ready"), Group::Open);
        let closed = AuthConfig {
            open_metrics: false,
            open_ready: false,
            ..config()
        };
        assert_eq!(group(&Method::GET, "/metrics", &closed), Group::Admin);
        assert_eq!(group(&Method::GET, "/ready", &closed), Group::Admin);
    }

    #[test]
    fn hashes_verify_and_validate() -> anyhow::Result<()> {
        let hash = hash_secret("s3cret")?;
        assert!(hash.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert!(Argon2::default()
            .verify_password(b"s3cret", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"other", &parsed)
            .is_err());
        let mut c = config();
        c.credentials.push(Credential {
            name: "p".into(),
            role: Role::Push,
            tenants: vec!["a".into()],
            token_hash: Some(hash.clone()),
            username: None,
            password_hash: None,
        });
        assert_eq!(c.validate(), Ok(()));
        c.credentials[0].token_hash = Some("plain".into());
        assert!(c
            .validate()
            .is_err_and(|e| e.contains("auth.credentials[p]")));
        c.credentials[0].token_hash = None;
        c.credentials[0].username = Some("u".into());
        assert!(c.validate().is_err_and(|e| e.contains("go together")));
        c.credentials[0].password_hash = Some(hash);
        assert_eq!(c.validate(), Ok(()));
        c.credentials[0].tenants.clear();
        assert!(c.validate().is_err());
        Ok(())
    }
}
