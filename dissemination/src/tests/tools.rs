//! Independent checkers: HMAC-SHA256 from the `hmac`/`sha2` crates (not ring, which the code under test uses),
//! `xmllint` with the OASIS CAP 1.2 XSD, and `tshark` for CBS pages and SBc-AP PDUs. A missing tool fails the test
//! with instructions: a skipped check would look like a passed one.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Checks `X-DC-Signature`'s `v1` by recomputing the HMAC over `"<t>.<body>"` with another implementation.
pub(crate) fn signature_ok(secret: &str, header: &str, body: &[u8]) -> bool {
    scheme_ok(secret, header, "v1", |t| format!("{t}."), body)
}

/// Checks `X-DC-Signature`'s `v2` the same way, over `"<t>\n<X-DC-Delivery>\n<X-DC-Attempt>\n<body>"` as the
/// request carried them.
pub(crate) fn delivery_signature_ok(secret: &str, request: &super::Received) -> bool {
    let (delivery, attempt) = (request.header("X-DC-Delivery"), request.header("X-DC-Attempt"));
    let prefix = |t: &str| format!("{t}\n{delivery}\n{attempt}\n");
    scheme_ok(secret, request.header("X-DC-Signature"), "v2", prefix, &request.body)
}

fn scheme_ok(secret: &str, header: &str, scheme: &str, prefix: impl Fn(&str) -> String, body: &[u8]) -> bool {
    let mut t = None;
    let mut tag = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some((name, v)) if name == scheme => tag = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(tag)) = (t, tag) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(prefix(t).as_bytes());
    mac.update(body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    expected == tag
}

/// The OASIS CAP 1.2 XSD, found once for the whole crate's tests (`cap/tests/xsd.rs`); panics with the setup hint when
/// there is none.
pub(crate) fn xsd() -> &'static Path {
    encoders::test_support::xsd_path()
}

/// `xmllint --noout [--schema XSD] -`; Ok or the tool's complaint.
pub(crate) use encoders::test_support::xmllint;

pub(crate) fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn require(tool: &str) {
    let ok = Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is not installed: these checks decode our bytes with Wireshark's dissectors; \
         `apt-get install tshark` (it brings text2pcap) and run again"
    );
}

/// Which dissector reads the packets.
#[derive(Clone, Copy)]
pub(crate) enum Dissector {
    /// 88-octet CBS pages as user DLT 147 → `gsm_cbs`.
    Cbs,
    /// SBc-AP PDUs in SCTP on port 29168, PPID 24.
    Sbcap,
}

/// Per packet: field → values (several occurrences joined by U+001F).
pub(crate) fn tshark_fields(kind: Dissector, packets: &[Vec<u8>], names: &[&str]) -> Vec<HashMap<String, Vec<String>>> {
    require("text2pcap");
    require("tshark");
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dc-diss-tshark-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut hex = String::new();
    for p in packets {
        for (i, line) in p.chunks(16).enumerate() {
            hex.push_str(&format!("{:06x}", i * 16));
            for b in line {
                hex.push_str(&format!(" {b:02x}"));
            }
            hex.push('\n');
        }
    }
    let txt = dir.join("in.txt");
    let pcap = dir.join("p.pcap");
    std::fs::write(&txt, hex).unwrap();
    let mut t2p = Command::new("text2pcap");
    t2p.arg("-q");
    match kind {
        Dissector::Cbs => t2p.args(["-l", "147"]),
        Dissector::Sbcap => t2p.args(["-S", "29168,29168,24"]),
    };
    let out = t2p.arg(&txt).arg(&pcap).output().expect("run text2pcap");
    assert!(out.status.success(), "text2pcap: {}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = Command::new("tshark");
    if let Dissector::Cbs = kind {
        cmd.args(["-o", r#"uat:user_dlts:"User 0 (DLT=147)","gsm_cbs","0","","0","""#]);
    }
    cmd.arg("-r").arg(&pcap).args([
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=\u{1f}",
        "-E",
        "quote=n",
    ]);
    for n in names {
        cmd.args(["-e", n]);
    }
    let out = cmd.output().expect("run tshark");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| {
            names
                .iter()
                .zip(line.split('\t'))
                .map(|(n, v)| {
                    let vals = if v.is_empty() { vec![] } else { v.split('\u{1f}').map(str::to_string).collect() };
                    (n.to_string(), vals)
                })
                .collect()
        })
        .collect()
}
