//! What `serve` refuses before anything starts, so that a copy of the demo's config cannot become a production
//! server by accident:
//!
//! - **secrets written in a config file** (tokens, HMAC secrets, webhook secrets, device passwords, the InfluxDB
//!   token, the upstream broker's password): they come from an environment variable named by `*_env`, or, for
//!   devices, as an argon2 `password_hash`; a cluster worker's alert signing key comes from a file only its owner may
//!   read or from `signing_key_env` (`scale_out::ClusterRole::resolve`);
//! - **the demo's published values**, inline or in those environment variables (every secret `config/` ships is on
//!   the internet with this repository);
//! - **placeholders** of the production template (`config/production/`): any name under the reserved `.invalid`
//!   top-level domain (RFC 6761), which can never resolve;
//! - **delivery to this server itself** (webhook subscribers, carriers' CBC endpoints, polled feeds whose URL is our
//!   own public URL or listen address, as the demo's `/demo/*` receivers are): otherwise `GET /api/v1/broadcasts`
//!   reports carriers `acked` when nothing left the machine. A drill environment says so with `[deployment] drill =
//!   true`, and then also gets the demo receivers;
//! - **Web Push in the clear** (`[push] allow_http_loopback`, the demo's stand-in push service) outside a drill.
//!
//! Every problem is reported at once, each naming the file, the key and the reason; each counts in
//! `dc_config_refused_total{reason}`. `demo` runs none of this: its conveniences are the point of it.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::config::{embedded, ConfigFiles};

/// `[deployment]` in the main config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSection {
    /// A drill (exercise, staging) environment: `serve` may deliver webhooks and cell broadcasts to itself, and mounts
    /// the demo's receivers (`/demo/*`) for them. Never on a server whose deliveries people rely on.
    #[serde(default)]
    pub drill: bool,
}

/// Keys whose value is a credential, in every config file we read.
const SECRET_KEYS: [&str; 4] = ["token", "hmac_secret", "secret", "password"];

/// One reason `serve` will not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub key: String,
    pub reason: String,
    /// The `dc_config_refused_total` label.
    pub kind: &'static str,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: `{}`: {}", self.file, self.key, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("serve refuses this configuration (`demo` runs the demo config as it is):\n{}", list(.0))]
    Refused(Vec<Problem>),
    #[error("{file}: `{key}`: {message}")]
    Invalid { file: String, key: String, message: String },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

/// Everything `serve` refuses in `files` (before `*_env` secrets are resolved). `env` reads the environment.
pub fn check_serve(
    files: &ConfigFiles,
    main_file: &str,
    http_listen: SocketAddr,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), DeploymentError> {
    let demo_values = demo_secrets();
    let mut problems = Vec::new();
    let cfg = &files.main;

    // The main file, by its typed keys (it has few secrets and is already parsed).
    if cfg.influx.as_ref().is_some_and(|i| !i.token.is_empty()) {
        problems.push(inline(main_file, "influx.token", "token_env", None));
    }
    if let Some(var) = cfg.influx.as_ref().and_then(|i| i.token_env.as_deref()) {
        check_env(main_file, "influx.token_env", var, env, &demo_values, &mut problems);
    }
    if let Some(upstream) = &cfg.upstream {
        if upstream.password.is_some() {
            problems.push(inline(main_file, "upstream.password", "password_env", None));
        }
        if let Some(var) = upstream.password_env.as_deref() {
            check_env(main_file, "upstream.password_env", var, env, &demo_values, &mut problems);
        }
        // A worker's alert signing key has no inline form at all (`signing_key_file` or `signing_key_env`); the file
        // is checked (owner-only) where it is read, `scale_out::ClusterRole::resolve`.
        if let Some(var) = upstream.signing_key_env.as_deref() {
            check_env(main_file, "upstream.signing_key_env", var, env, &demo_values, &mut problems);
        }
    }
    if let Some(cluster) = &cfg.cluster {
        // The NATS password: from the environment or an owner-only file (`scale_out::backbone`), never inline.
        if cluster.password.is_some() {
            problems.push(inline(main_file, "cluster.password", "password_env", None));
        }
        for (key, var) in
            [("cluster.password_env", &cluster.password_env), ("cluster.signing_key_env", &cluster.signing_key_env)]
        {
            if let Some(var) = var.as_deref() {
                check_env(main_file, key, var, env, &demo_values, &mut problems);
            }
        }
    }
    for (key, value) in [("http.public_url", cfg.http.public_url.as_str())]
        .into_iter()
        .chain(cfg.tls.server_names.iter().map(|n| ("tls.server_names", n.as_str())))
    {
        if is_placeholder(value) {
            problems.push(placeholder(main_file, key, value));
        }
    }

    // The other files, by walking their TOML: a secret key anywhere is refused, whatever table it is in.
    let tables = [Some(&files.devices), files.inbound.as_ref(), files.dissemination.as_ref()];
    for (text, path) in tables.into_iter().flatten() {
        let file = path.display().to_string();
        let value = parse(text, &file)?;
        walk(&value, "", None, &mut |key, name, leaf, text| {
            let named = name.map(|n| format!(" ({n})")).unwrap_or_default();
            if SECRET_KEYS.contains(&leaf) {
                let published = demo_values.contains(text);
                // Devices prove themselves against a hash; partners' and carriers' secrets are sent, so they must
                // exist in clear somewhere: the environment.
                let instead = if leaf == "password" { "password_hash".to_string() } else { format!("{leaf}_env") };
                problems.push(inline(&file, &format!("{key}{named}"), &instead, Some(published)));
            } else if let Some(var) = leaf.strip_suffix("_env").filter(|k| SECRET_KEYS.contains(k)).map(|_| text) {
                check_env(&file, &format!("{key}{named}"), var, env, &demo_values, &mut problems);
            } else if is_placeholder(text) {
                problems.push(placeholder(&file, &format!("{key}{named}"), text));
            }
        });
    }

    if !cfg.deployment.drill {
        problems.extend(self_deliveries(files, main_file, http_listen));
        problems.extend(push_over_http(files)?);
    }

    if problems.is_empty() {
        return Ok(());
    }
    for p in &problems {
        crate::metrics::CONFIG_REFUSED.with_label_values(&[p.kind]).inc();
    }
    Err(DeploymentError::Refused(problems))
}

/// Puts the values of `*_env` secrets of the main file in place (`influx.token_env`, `upstream.password_env`); the
/// other files' `*_env` are resolved by their own crates at start.
pub fn resolve_env(
    files: &mut ConfigFiles,
    main_file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), DeploymentError> {
    let unset = |key: &str, var: &str| DeploymentError::Invalid {
        file: main_file.into(),
        key: key.into(),
        message: format!("environment variable {var} is not set"),
    };
    if let Some(influx) = files.main.influx.as_mut() {
        if let Some(var) = influx.token_env.clone() {
            influx.token = env(&var).ok_or_else(|| unset("influx.token_env", &var))?;
        }
    }
    if let Some(upstream) = files.main.upstream.as_mut() {
        if let Some(var) = upstream.password_env.clone() {
            if upstream.password.is_some() {
                return Err(DeploymentError::Invalid {
                    file: main_file.into(),
                    key: "upstream.password_env".into(),
                    message: "give password or password_env, not both".into(),
                });
            }
            upstream.password = Some(env(&var).ok_or_else(|| unset("upstream.password_env", &var))?);
        }
    }
    Ok(())
}

/// Every secret value the shipped demo configuration publishes.
fn demo_secrets() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for text in [embedded::INBOUND, embedded::DISSEMINATION, embedded::DEVICES] {
        let Ok(value) = toml::from_str::<toml::Value>(text) else { continue };
        walk(&value, "", None, &mut |_, _, leaf, text| {
            if SECRET_KEYS.contains(&leaf) {
                out.insert(text.to_string());
            }
        });
    }
    out
}

/// What [`walk`] calls per string: key path, entry name, leaf key, value.
type Visit<'v> = dyn FnMut(&str, Option<&str>, &str, &str) + 'v;

/// Calls `visit(key path, entry name, leaf key, value)` for every string in `value`; `name` is the enclosing array
/// entry's `name` or `id`, so messages say which subscriber or device.
fn walk<'a>(value: &'a toml::Value, path: &str, name: Option<&'a str>, visit: &mut Visit<'_>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match v {
                    toml::Value::String(s) => visit(&key, name, k, s),
                    _ => walk(v, &key, name, visit),
                }
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let own = item.get("name").or_else(|| item.get("id")).and_then(toml::Value::as_str);
                let key = format!("{path}[{i}]");
                match item {
                    toml::Value::String(s) => visit(&key, name, path.rsplit('.').next().unwrap_or(path), s),
                    _ => walk(item, &key, own.or(name), visit),
                }
            }
        }
        _ => {}
    }
}

fn inline(file: &str, key: &str, instead: &str, published: Option<bool>) -> Problem {
    let demo = if published == Some(true) { " (and it is the demo's published value)" } else { "" };
    Problem {
        file: file.into(),
        key: key.into(),
        reason: format!(
            "a secret written in the config file{demo}: anyone with a copy of the file has it; use `{instead}` instead"
        ),
        kind: if published == Some(true) { "demo_secret" } else { "inline_secret" },
    }
}

fn check_env(
    file: &str,
    key: &str,
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
    demo: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    let problem = |reason: String, kind| Problem { file: file.into(), key: key.into(), reason, kind };
    match env(var) {
        None => problems.push(problem(format!("environment variable {var} is not set"), "unset_env")),
        Some(v) if v.trim().is_empty() => {
            problems.push(problem(format!("environment variable {var} is empty"), "unset_env"))
        }
        Some(v) if demo.contains(&v) => problems.push(problem(
            format!("environment variable {var} holds the demo's published value: make a new secret"),
            "demo_secret",
        )),
        Some(_) => {}
    }
}

/// `[push] allow_http_loopback`: Web Push in the clear to this machine is for tests and the demo's stand-in push
/// service, never for a server whose citizens rely on it.
fn push_over_http(files: &ConfigFiles) -> Result<Option<Problem>, DeploymentError> {
    let Some((text, path)) = files.dissemination.as_ref() else { return Ok(None) };
    let file = path.display().to_string();
    let value = parse(text, &file)?;
    let on = value.get("push").and_then(|p| p.get("allow_http_loopback")).and_then(toml::Value::as_bool);
    Ok((on == Some(true)).then(|| Problem {
        file,
        key: "push.allow_http_loopback".into(),
        reason: "http:// push endpoints are for tests and the demo; turn it off (or `[deployment] drill = true`)"
            .into(),
        kind: "push_http",
    }))
}

/// A config file's TOML, or an error naming the file.
fn parse(text: &str, file: &str) -> Result<toml::Value, DeploymentError> {
    toml::from_str(text).map_err(|e| DeploymentError::Invalid {
        file: file.into(),
        key: "file".into(),
        message: e.to_string(),
    })
}

/// A name under `.invalid` (RFC 6761: never resolves), as the production template writes what must be replaced.
fn is_placeholder(text: &str) -> bool {
    let host = host_of(text).unwrap_or_else(|| text.to_ascii_lowercase());
    host.trim_end_matches('.').ends_with(".invalid")
}

fn placeholder(file: &str, key: &str, value: &str) -> Problem {
    Problem {
        file: file.into(),
        key: key.into(),
        reason: format!("`{value}` is a placeholder of the production template (.invalid): put your own value"),
        kind: "placeholder",
    }
}

fn host_of(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
}

/// Targets of outbound deliveries and polls that are this server itself.
fn self_deliveries(files: &ConfigFiles, main_file: &str, http_listen: SocketAddr) -> Vec<Problem> {
    let public_url = files.main.http.public_url.trim_end_matches('/');
    let us = Ours { public: url::Url::parse(public_url).ok(), listen: http_listen };
    let mut targets: Vec<(String, String, String)> = Vec::new();
    if let Some((text, path)) = &files.dissemination {
        let text = text.replace("{public_url}", public_url);
        if let Ok(value) = toml::from_str::<toml::Value>(&text) {
            for (table, key) in [("subscriber", "url"), ("carrier", "cbc_url")] {
                for (i, entry) in value.get(table).and_then(toml::Value::as_array).into_iter().flatten().enumerate() {
                    if let Some(url) = entry.get(key).and_then(toml::Value::as_str) {
                        let name = entry.get("name").and_then(toml::Value::as_str).unwrap_or("?");
                        targets.push((path.display().to_string(), format!("{table}[{i}].{key} ({name})"), url.into()));
                    }
                }
            }
        }
    }
    if let Some((text, path)) = &files.inbound {
        // Vehicle-detector feeds may name `{public_url}` (the demo's own stand-in feed), as dissemination does.
        let text = text.replace("{public_url}", public_url);
        if let Ok(value) = toml::from_str::<toml::Value>(&text) {
            for table in ["feed", "vd_feed"] {
                for (i, entry) in value.get(table).and_then(toml::Value::as_array).into_iter().flatten().enumerate() {
                    if let Some(url) = entry.get("url").and_then(toml::Value::as_str) {
                        let name = entry.get("name").and_then(toml::Value::as_str).unwrap_or("?");
                        targets.push((path.display().to_string(), format!("{table}[{i}].url ({name})"), url.into()));
                    }
                }
            }
        }
    }
    targets
        .into_iter()
        .filter(|(_, _, url)| us.is_self(url))
        .map(|(file, key, url)| Problem {
            file,
            key,
            reason: format!(
                "`{url}` is this server itself (http.public_url or the HTTP listen address): nothing would leave the \
                 machine, yet deliveries would count as done. Point it at the real receiver, or, for a drill \
                 environment only, set `drill = true` under `[deployment]` in {main_file}"
            ),
            kind: "self_delivery",
        })
        .collect()
}

/// A `http.public_url` on this machine whose port is not the one we listen on: every link we publish (CAP, feed,
/// photos) would be dead. Only a warning: a local reverse proxy may legitimately sit on another port.
pub fn public_url_mismatch(public_url: &str, http_listen: SocketAddr) -> Option<String> {
    let url = url::Url::parse(public_url).ok()?;
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let port = url.port_or_known_default()?;
    let local = match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified() || ip == http_listen.ip(),
        Err(_) => host == "localhost",
    };
    (local && port != http_listen.port()).then(|| {
        format!(
            "http.public_url `{public_url}` is this machine on port {port}, but HTTP listens on {http_listen}: links in \
             CAP messages, the feed and photos will not reach us unless a proxy forwards that port"
        )
    })
}

/// Whether `target` is this server itself (its `public_url`, or its HTTP listen address on this machine): the check
/// `serve` applies to the config's targets at start and to subscribers added over the API.
pub fn is_self_target(public_url: &str, http_listen: SocketAddr, target: &str) -> bool {
    Ours { public: url::Url::parse(public_url).ok(), listen: http_listen }.is_self(target)
}

/// Where this server can be reached, to recognise a target that is ourselves.
struct Ours {
    public: Option<url::Url>,
    listen: SocketAddr,
}

impl Ours {
    fn is_self(&self, target: &str) -> bool {
        let Ok(target) = url::Url::parse(target) else { return false };
        let (Some(host), Some(port)) = (target.host_str(), target.port_or_known_default()) else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if let Some(public) = &self.public {
            let same_host = public.host_str().is_some_and(|h| h.eq_ignore_ascii_case(&host));
            if same_host && public.port_or_known_default() == Some(port) {
                return true;
            }
        }
        if port != self.listen.port() {
            return false;
        }
        let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified() || ip == self.listen.ip();
        match host.parse::<IpAddr>() {
            Ok(ip) => local(ip),
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(public: &str, listen: &str) -> Ours {
        Ours { public: url::Url::parse(public).ok(), listen: listen.parse().unwrap() }
    }

    #[test]
    fn self_targets_are_recognised() {
        let us = ours("https://alerts.example.tw", "0.0.0.0:8443");
        assert!(us.is_self("https://alerts.example.tw/demo/cbc/cht"));
        assert!(us.is_self("https://ALERTS.example.tw:443/x"));
        assert!(us.is_self("http://127.0.0.1:8443/demo/webhook"));
        assert!(us.is_self("http://localhost:8443/"));
        assert!(us.is_self("http://[::1]:8443/"));
        assert!(!us.is_self("https://cbc.cht.example.tw/"));
        assert!(!us.is_self("http://127.0.0.1:9000/hook"));
        assert!(!us.is_self("https://alerts.example.tw:8444/"));
    }

    #[test]
    fn the_demo_config_is_refused_with_every_secret_kind_named() {
        let files = ConfigFiles::embedded().unwrap();
        let e = check_serve(&files, "disaster-cloud.toml", "127.0.0.1:8080".parse().unwrap(), &|_| None)
            .unwrap_err()
            .to_string();
        for needle in [
            "inbound.toml (embedded): `push[0].token (demo-agency)`",
            "`push[1].hmac_secret (swcb)`",
            "devices.toml (embedded): `device[0].password (RG0001)`",
            "`subscriber[0].secret (demo-media)`",
            "`carrier[0].token (Chunghwa Telecom)`",
            "`carrier[0].cbc_url (Chunghwa Telecom)`",
            "drill = true",
            "demo's published value",
        ] {
            assert!(e.contains(needle), "{needle} missing from:\n{e}");
        }
    }

    #[test]
    fn the_nats_password_is_never_in_the_file_and_its_variable_must_hold_one() {
        let mut files = ConfigFiles::embedded().unwrap();
        files.main.cluster = Some(crate::config::ClusterSection {
            password: Some("written-in-the-file-0123".into()),
            ..Default::default()
        });
        let e = check_serve(&files, "main.toml", "127.0.0.1:8080".parse().unwrap(), &|_| None).unwrap_err().to_string();
        assert!(e.contains("main.toml: `cluster.password`: a secret written in the config file"), "{e}");
        assert!(e.contains("use `password_env` instead"), "{e}");
        files.main.cluster =
            Some(crate::config::ClusterSection { password_env: Some("DC_TEST_NATS_PW".into()), ..Default::default() });
        let e = check_serve(&files, "main.toml", "127.0.0.1:8080".parse().unwrap(), &|_| Some(" ".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("main.toml: `cluster.password_env`: environment variable DC_TEST_NATS_PW is empty"), "{e}");
    }

    #[test]
    fn a_workers_signing_key_variable_must_be_set() {
        let mut files = ConfigFiles::embedded().unwrap();
        files.main.upstream = Some(crate::config::UpstreamSection {
            signing_key_env: Some("DC_TEST_UNSET_SIGNING_KEY".into()),
            ..Default::default()
        });
        let e = check_serve(&files, "main.toml", "127.0.0.1:8080".parse().unwrap(), &|_| None).unwrap_err().to_string();
        assert!(
            e.contains("main.toml: `upstream.signing_key_env`: environment variable DC_TEST_UNSET_SIGNING_KEY"),
            "{e}"
        );
        // An inline key has no key to be written under: the config is refused by name.
        let e = toml::from_str::<crate::config::UpstreamSection>("signing_key = \"-----BEGIN PRIVATE KEY-----\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("signing_key"), "{e}");
    }

    #[test]
    fn a_demo_value_in_the_environment_is_refused() {
        let mut problems = Vec::new();
        let env = |_: &str| Some("demo-swcb-secret".to_string());
        check_env("f", "push[1].hmac_secret_env", "V", &env, &demo_secrets(), &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].reason.contains("published"), "{}", problems[0]);
        problems.clear();
        check_env("f", "k", "V", &|_| Some("a-real-secret-0123".into()), &demo_secrets(), &mut problems);
        check_env("f", "k", "V", &|_| None, &demo_secrets(), &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].reason.contains("not set"));
    }

    #[test]
    fn a_local_public_url_on_another_port_is_noticed() {
        let listen: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        assert!(public_url_mismatch("http://127.0.0.1:8080", listen).is_some());
        assert!(public_url_mismatch("http://localhost:9090", listen).is_none());
        assert!(public_url_mismatch("https://alerts.example.tw", listen).is_none());
    }

    #[test]
    fn placeholders_are_names_under_invalid() {
        assert!(is_placeholder("https://alerts.example.invalid"));
        assert!(is_placeholder("alerts.example.invalid"));
        assert!(!is_placeholder("https://alerts.example.tw"));
        assert!(!is_placeholder("127.0.0.1"));
    }
}
