//! Feed our bytes to Wireshark's dissectors: hex → `text2pcap` → `tshark`. Same recipe as the
//! team's `tshark-decode.sh`, copied here so tests need nothing but Debian's `tshark` package.
//!
//! A missing `tshark` fails the test with instructions: these are the tests that prove the
//! wire formats, so skipping them silently would hide exactly what they exist to catch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which dissector reads the packets.
#[derive(Debug, Clone, Copy)]
pub enum Dissector {
    /// 88-octet GSM CBS pages, as raw frames of user DLT 147 mapped to `gsm_cbs`.
    Cbs,
    /// SBc-AP PDUs in SCTP DATA chunks on port 29168 with PPID 24.
    Sbcap,
}

/// Separates several occurrences of one field in `-T fields` output; a control character
/// no decoded text of ours contains.
const AGGREGATOR: char = '\u{1f}';

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cbs-tshark-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn require(tool: &str) {
    let found = Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed or not on PATH. These tests check our cell broadcast bytes with \
         Wireshark's independent decoders; install them with `apt-get install tshark` (Debian/Ubuntu; \
         it brings text2pcap) and run again."
    );
}

/// Write the packets as a pcap and return (scratch dir, pcap path).
fn pcap(kind: Dissector, packets: &[Vec<u8>]) -> (Scratch, PathBuf) {
    require("text2pcap");
    require("tshark");
    let dir = Scratch::new();
    let mut hex = String::new();
    for p in packets {
        // od-style dump: an offset of 0 starts a new packet.
        for (i, line) in p.chunks(16).enumerate() {
            hex.push_str(&format!("{:06x}", i * 16));
            for b in line {
                hex.push_str(&format!(" {b:02x}"));
            }
            hex.push('\n');
        }
    }
    let txt = dir.0.join("in.txt");
    let out = dir.0.join("p.pcap");
    std::fs::write(&txt, hex).expect("write hex dump");
    let mut cmd = Command::new("text2pcap");
    cmd.arg("-q");
    match kind {
        Dissector::Cbs => cmd.args(["-l", "147"]),
        Dissector::Sbcap => cmd.args(["-S", "29168,29168,24"]),
    };
    let status = cmd.arg(&txt).arg(&out).output().expect("run text2pcap");
    assert!(status.status.success(), "text2pcap failed: {}", String::from_utf8_lossy(&status.stderr));
    (dir, out)
}

fn tshark(kind: Dissector, pcap: &PathBuf, extra: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    if let Dissector::Cbs = kind {
        cmd.args(["-o", r#"uat:user_dlts:"User 0 (DLT=147)","gsm_cbs","0","","0","""#]);
    }
    cmd.arg("-r").arg(pcap).args(extra);
    let out = cmd.output().expect("run tshark");
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

/// The full `-V` tree, for failure messages and eyeballing.
pub fn verbose(kind: Dissector, packets: &[Vec<u8>]) -> String {
    let (_dir, p) = pcap(kind, packets);
    let extra: &[&str] = match kind {
        Dissector::Cbs => &["-V"],
        Dissector::Sbcap => &["-O", "sbcap", "-V"],
    };
    tshark(kind, &p, extra)
}

/// Per packet: field name → every occurrence's displayed value.
pub fn fields(kind: Dissector, packets: &[Vec<u8>], names: &[&str]) -> Vec<HashMap<String, Vec<String>>> {
    let (_dir, p) = pcap(kind, packets);
    let agg = format!("aggregator={AGGREGATOR}");
    let mut args = vec!["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", &agg, "-E", "quote=n"];
    for n in names {
        args.push("-e");
        args.push(n);
    }
    let out = tshark(kind, &p, &args);
    out.lines()
        .map(|line| {
            names
                .iter()
                .zip(line.split('\t'))
                .map(|(n, v)| {
                    let values = if v.is_empty() { vec![] } else { v.split(AGGREGATOR).map(str::to_string).collect() };
                    (n.to_string(), values)
                })
                .collect()
        })
        .collect()
}

/// The one value of `name` in a packet, with a readable failure.
pub fn one<'a>(packet: &'a HashMap<String, Vec<String>>, name: &str) -> &'a str {
    match packet.get(name).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("expected one value of {name}, got {other:?}"),
    }
}

#[test]
#[should_panic(expected = "apt-get install tshark")]
fn a_missing_decoder_fails_with_instructions() {
    require("tshark-that-is-not-installed");
}
