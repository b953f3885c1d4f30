//! Where a feed's poller may connect. A feed is a list of links written by someone else: followed blindly, one
//! entry (or a redirect) could make us fetch our own cloud metadata service (`169.254.169.254`), an admin page on
//! the private network, or any host on the Internet with our address as the source. So every request of a feed —
//! the feed itself, each CAP document, each redirect hop — passes three checks:
//!
//! 1. **Host allow-list**: the URL's host is the feed URL's own host or one listed in the source's `hosts`
//!    ([`EgressPolicy::check_url`]). Checked before anything is resolved.
//! 2. **Same-origin redirects**: a redirect may only stay on the origin (scheme, host, port) it came from, at most
//!    [`MAX_REDIRECTS`] hops ([`EgressPolicy::check_redirect`]). The client itself follows none.
//! 3. **Address classes**: loopback, private (RFC 1918, CGNAT, IPv6 ULA) and link-local addresses are refused
//!    unless the source's `allow_networks` names that class (or a CIDR block holding the address); unspecified,
//!    multicast and reserved addresses always.
//!    An IP-literal host is checked before the request ([`EgressPolicy::check_url`]), because the HTTP connector
//!    does not resolve literals. A name is checked inside the client's DNS resolver ([`GuardedResolver`]): every
//!    address the name resolves to must pass, or the request fails before any connection is opened.
//!
//! **DNS rebinding.** The check and the connection use one resolution: [`GuardedResolver`] *is* the client's
//! resolver, so the addresses it checked are the only ones the connector can dial; there is no second lookup for
//! a rebinding name server to answer differently. As a last line, the address the response actually came from
//! ([`reqwest::Response::remote_addr`]) is checked again before any of the body is read. Proxies from the
//! environment are not used (the proxy's address, not the target's, would be the one checked).
//!
//! Each refusal is a [`Refusal`] whose [`Refusal::reason`] is the metrics label (`host_not_allowed`,
//! `address_not_allowed`, `redirect_refused`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use serde::Deserialize;

/// Most redirects followed for one request (all on the same origin).
pub const MAX_REDIRECTS: usize = 5;

/// What a source may reach besides public addresses (`allow_networks` in `config/inbound.toml`): a whole class
/// by name, or one block (`"10.20.0.0/16"`, `"127.0.0.1/32"`) for a partner on a private network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Network {
    /// `"loopback"`: 127.0.0.0/8, ::1, this machine (tests and demos serve feeds here).
    Loopback,
    /// `"private"`: 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), 198.18/15, fc00::/7, fec0::/10.
    Private,
    /// `"link_local"`: 169.254/16, fe80::/10, the link, where cloud metadata services answer.
    LinkLocal,
    /// A CIDR block: any address in it, whatever its class (unroutable ones excepted).
    Block(ipnet::IpNet),
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "loopback" => Ok(Network::Loopback),
            "private" => Ok(Network::Private),
            "link_local" => Ok(Network::LinkLocal),
            other => other.parse::<ipnet::IpNet>().map(|net| Network::Block(net.trunc())).map_err(|_| {
                format!("`{other}` is not loopback, private, link_local or a CIDR block such as 10.20.0.0/16")
            }),
        }
    }
}

/// What kind of address an IP is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    Private,
    LinkLocal,
    /// Unspecified (0.0.0.0 reaches this host), multicast, broadcast, reserved: never a feed.
    Never,
}

impl AddressClass {
    fn label(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Never => "unroutable",
        }
    }
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The class of `ip`. IPv4 addresses embedded in IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) are classed as the IPv4 address they reach.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, _, _] = ip.octets();
    if a == 0 || ip.is_multicast() || a >= 240 {
        AddressClass::Never
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) || (a == 198 && (b == 18 || b == 19)) {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        return AddressClass::Never;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // IPv4-compatible (deprecated, ::a.b.c.d) and NAT64 (64:ff9b::/96) reach the IPv4 address in the low bits.
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(s[6], s[7]));
    }
    // 6to4 reaches the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    }
    match s[0] {
        x if x & 0xff00 == 0xff00 => AddressClass::Never,
        x if x & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        x if x & 0xfe00 == 0xfc00 || x & 0xffc0 == 0xfec0 => AddressClass::Private,
        _ => AddressClass::Public,
    }
}

/// Why a request was not made (or its answer not read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The URL's host is neither the feed's own nor in the source's `hosts`.
    #[error("host `{host}` is not in this source's hosts")]
    HostNotAllowed { host: String },
    /// The host is (or resolves to) an address of a class the source may not reach.
    #[error("`{host}` is {addr}, a {class} address this source may not reach (allow_networks)")]
    AddressNotAllowed { host: String, addr: IpAddr, class: AddressClass },
    /// A redirect to another origin.
    #[error("redirect from {from} to another origin ({to}) refused")]
    CrossOriginRedirect { from: String, to: String },
    /// More than [`MAX_REDIRECTS`] hops, or a redirect without a usable `Location`.
    #[error("redirect refused: {0}")]
    BadRedirect(String),
}

impl Refusal {
    /// Every label, for pre-registering metrics.
    pub const LABELS: &'static [&'static str] = &["host_not_allowed", "address_not_allowed", "redirect_refused"];

    /// Metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::HostNotAllowed { .. } => "host_not_allowed",
            Refusal::AddressNotAllowed { .. } => "address_not_allowed",
            Refusal::CrossOriginRedirect { .. } | Refusal::BadRedirect(_) => "redirect_refused",
        }
    }

    /// The refusal inside a client error, when the resolver refused (reqwest wraps it a few layers deep).
    pub(crate) fn within(e: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
        let mut current = Some(e);
        while let Some(err) = current {
            if let Some(r) = err.downcast_ref::<Refusal>() {
                return Some(r.clone());
            }
            current = err.source();
        }
        None
    }
}

/// One source's rules for where its requests may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Hosts as the URL parser normalises them (lowercase, punycode, IPv6 in brackets); the feed's own first.
    hosts: Vec<String>,
    /// Address classes besides public ones that may be reached.
    allow: Vec<Network>,
}

impl EgressPolicy {
    /// The policy of a feed at `feed_url` whose config lists `hosts` and `allow`. `Err` names the bad host.
    pub fn new(feed_url: &Url, hosts: &[String], allow: &[Network]) -> Result<Self, String> {
        let own = feed_url.host_str().ok_or_else(|| format!("`{feed_url}` has no host"))?.to_string();
        let mut all = vec![own];
        for h in hosts {
            let host = normalise_host(h)?;
            if !all.contains(&host) {
                all.push(host);
            }
        }
        Ok(EgressPolicy { hosts: all, allow: allow.to_vec() })
    }

    /// `Ok` when `addr` (reached as `host`) may be connected to: public, or of a class or in a block the source
    /// allows; unroutable addresses never.
    pub fn check_address(&self, host: &str, addr: IpAddr) -> Result<(), Refusal> {
        let class = classify(addr);
        let allowed = match class {
            AddressClass::Public => true,
            AddressClass::Never => false,
            _ => self.allow.iter().any(|n| match n {
                Network::Loopback => class == AddressClass::Loopback,
                Network::Private => class == AddressClass::Private,
                Network::LinkLocal => class == AddressClass::LinkLocal,
                Network::Block(net) => net.contains(&addr),
            }),
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::AddressNotAllowed { host: host.to_string(), addr, class })
        }
    }

    /// Before requesting `url`: its host is allowed, and an IP-literal host is of an allowed class (names are
    /// checked by [`GuardedResolver`] when they resolve).
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        let host = url.host_str().unwrap_or_default();
        if !self.hosts.iter().any(|h| h == host) {
            return Err(Refusal::HostNotAllowed { host: host.to_string() });
        }
        // The URL parser has already normalised IPv4 spellings (`0x7f.1`, `2130706433`) to dotted quads.
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => self.check_address(host, ip),
            Err(_) => Ok(()),
        }
    }

    /// A redirect from `from` to `to`: only on the same origin, and `to` passes [`Self::check_url`].
    pub fn check_redirect(&self, from: &Url, to: &Url) -> Result<(), Refusal> {
        if from.origin() != to.origin() {
            return Err(Refusal::CrossOriginRedirect {
                from: from.origin().ascii_serialization(),
                to: to.origin().ascii_serialization(),
            });
        }
        self.check_url(to)
    }
}

/// `host` as [`Url::host_str`] writes it, or why it is not a bare host name or address.
fn normalise_host(host: &str) -> Result<String, String> {
    let bad = || format!("`{host}` is not a bare host name or IP address (no scheme, port or path)");
    // An IPv6 address is written bare (`fd00::1`) or bracketed; anything else with these characters has a
    // scheme, port, user or path the URL parser would quietly drop (`x:80` is `x`).
    let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let authority = match inner.parse::<Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) if host.is_empty() || host.contains([':', '/', '@', '?', '#', '\\', '[', ']', ' ']) => return Err(bad()),
        Err(_) => host.to_string(),
    };
    let url = Url::parse(&format!("http://{authority}/")).map_err(|_| bad())?;
    url.host_str().map(str::to_string).ok_or_else(bad)
}

/// The client's DNS resolver for one source: resolves with the system resolver, then refuses the name unless every
/// address passes the source's [`EgressPolicy`] — a name with one private address among public ones is refused,
/// since the connector might dial any of them. Being the client's only resolver, what it checks is what is dialled.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<EgressPolicy>) -> Self {
        GuardedResolver { policy }
    }

    /// The checked addresses of `host` (port 0: the connector sets the URL's).
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        for a in &addrs {
            self.policy.check_address(host, a.ip())?;
        }
        Ok(addrs)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().expect("an IP address"))
    }

    #[test]
    fn address_classes() {
        for (ip, want) in [
            ("8.8.8.8", AddressClass::Public),
            ("210.69.40.1", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.0.0.2", AddressClass::Loopback),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.5.4", AddressClass::Private),
            ("172.32.0.1", AddressClass::Public),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("198.18.0.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("0.0.0.0", AddressClass::Never),
            ("224.0.0.1", AddressClass::Never),
            ("255.255.255.255", AddressClass::Never),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Never),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("::10.0.0.1", AddressClass::Private),
            ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
            ("2002:0a00:0001::1", AddressClass::Private),
            ("fd00::1", AddressClass::Private),
            ("fec0::1", AddressClass::Private),
            ("fe80::1", AddressClass::LinkLocal),
            ("ff02::1", AddressClass::Never),
            ("2001:4860:4860::8888", AddressClass::Public),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("URL")
    }

    #[test]
    fn hosts_redirects_and_literals() {
        let feed = url("https://alerts.example.gov.tw/feed.atom");
        let policy = EgressPolicy::new(&feed, &["CAP.Example.gov.tw".into(), "10.1.2.3".into()], &[]).expect("policy");
        assert_eq!(policy.check_url(&url("https://alerts.example.gov.tw/cap/1.xml")), Ok(()));
        assert_eq!(policy.check_url(&url("http://cap.example.gov.tw:8080/cap/1.xml")), Ok(()), "any port");
        let other = policy.check_url(&url("https://evil.example.com/cap/1.xml"));
        assert_eq!(other.map_err(|r| r.reason()), Err("host_not_allowed"));
        // Listed, but private: the class still decides.
        let private = policy.check_url(&url("http://10.1.2.3/cap/1.xml")).expect_err("private");
        assert_eq!(private.reason(), "address_not_allowed");
        let same = url("https://alerts.example.gov.tw/next");
        assert_eq!(policy.check_redirect(&feed, &same), Ok(()));
        for to in
            ["http://alerts.example.gov.tw/next", "https://alerts.example.gov.tw:444/x", "https://cap.example.gov.tw/"]
        {
            let r = policy.check_redirect(&feed, &url(to)).expect_err(to);
            assert_eq!(r.reason(), "redirect_refused", "{to}");
        }
        let allowed = EgressPolicy::new(&feed, &["10.1.2.3".into()], &[Network::Private]).expect("policy");
        assert_eq!(allowed.check_url(&url("http://10.1.2.3/cap/1.xml")), Ok(()));
        // One block, not the whole class.
        let block = Network::try_from("127.0.0.1/32".to_string()).expect("CIDR");
        let one = EgressPolicy::new(&url("http://127.0.0.1:8090/f"), &["127.0.0.2".into()], &[block]).expect("policy");
        assert_eq!(one.check_url(&url("http://127.0.0.1:8090/cap/1.xml")), Ok(()));
        let other = one.check_url(&url("http://127.0.0.2:8090/cap/1.xml")).map_err(|r| r.reason());
        assert_eq!(other, Err("address_not_allowed"));
        assert!(Network::try_from("intranet".to_string()).is_err());
        // Other spellings of loopback are loopback.
        for literal in ["http://2130706433/", "http://0x7f.1/", "http://[::ffff:7f00:1]/"] {
            let p = EgressPolicy::new(&url(literal), &[], &[]).expect("policy");
            assert_eq!(p.check_url(&url(literal)).map_err(|r| r.reason()), Err("address_not_allowed"), "{literal}");
        }
        let v6 = EgressPolicy::new(&feed, &["FD00::1".into()], &[Network::Private]).expect("bare IPv6");
        assert_eq!(v6.check_url(&url("http://[fd00::1]:8080/x")), Ok(()));
        for bad in ["http://x", "x:80", "x/y", "", "user@x", "x y"] {
            assert!(EgressPolicy::new(&feed, &[bad.into()], &[]).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_a_refused_address() {
        let strict =
            GuardedResolver::new(Arc::new(EgressPolicy::new(&url("http://localhost/"), &[], &[]).expect("policy")));
        let err = strict.lookup("localhost").await.expect_err("localhost is loopback");
        let refusal = Refusal::within(err.as_ref()).expect("a Refusal");
        assert_eq!(refusal.reason(), "address_not_allowed");
        let loopback = GuardedResolver::new(Arc::new(
            EgressPolicy::new(&url("http://localhost/"), &[], &[Network::Loopback]).expect("policy"),
        ));
        let addrs = loopback.lookup("localhost").await.expect("allowed");
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
