//! The operations kit in `ops/` held against real tools and the real binary (issue 27):
//! - `ops/prometheus/rules.yml` passes `promtool check rules` and its unit tests (`promtool test rules tests.yml`);
//! - every PromQL expression of the rules and of the Grafana dashboard (`ops/grafana/disaster-cloud.json`) parses
//!   (promtool, on a generated rules file holding each one as a recording rule) and selects only metrics a fresh
//!   `demo` exports on `/metrics` (scraped on ports this test picks) — a dashboard panel naming a metric that was
//!   renamed, or that appears only after a first event, fails here rather than showing "No data" in a control room;
//! - `ops/systemd/disaster-cloud.service` passes `systemd-analyze verify` and keeps its exposure score low.
//!
//! promtool is Debian's `prometheus` package (scripts/test installs it). systemd-analyze comes with systemd, which CI
//! images may not have: that test says so and returns.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::Server;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs (Debian package `prometheus`; scripts/test installs it)")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = repo("ops/prometheus/rules.yml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(out.status.success(), "promtool check rules:\n{}", text(&out));
    // Run from the rules' folder: tests.yml names `rules.yml` relative to itself.
    let out = Command::new("promtool")
        .args(["test", "rules", "tests.yml"])
        .current_dir(repo("ops/prometheus"))
        .output()
        .expect("promtool runs");
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
}

/// Metrics the rules may name that no disaster-cloud process exports, and who does.
const NOT_OURS: [(&str, &str); 3] = [
    ("up", "Prometheus itself, for every scrape target"),
    ("node_filesystem_avail_bytes", "node_exporter (the host's disks)"),
    ("node_filesystem_size_bytes", "node_exporter (the host's disks)"),
];

/// Metrics with one series per configured thing, so a demo without that thing has no series (and the Prometheus
/// client then prints no family either): `(name, what creates it, the source file that registers it)`. The name is
/// held against that file instead, so a rename still fails here.
const ONLY_WHERE_CONFIGURED: [(&str, &str, &str); 1] = [(
    "dc_inbound_feed_consecutive_failures",
    "one series per polled partner feed (`[[feed]]` in inbound.toml); the demo's partners push",
    "inbound/src/metrics.rs",
)];

/// The expressions of the rules file: `(rule name, expr)`.
fn rule_expressions() -> Vec<(String, String)> {
    let yaml = std::fs::read_to_string(repo("ops/prometheus/rules.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).expect("rules.yml is YAML");
    let mut out = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).expect("alert or record name");
            out.push((name.to_string(), rule["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

/// Every PromQL expression of the dashboard (`expr` of each panel's targets, rows' nested panels included) and the
/// metrics its template variables read (`label_values(metric, label)`), as `(panel title, expr)`.
fn dashboard_expressions() -> (serde_json::Value, Vec<(String, String)>) {
    let text = std::fs::read_to_string(repo("ops/grafana/disaster-cloud.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    fn walk(v: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                let title = map.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                    out.push((title.to_string(), expr.to_string()));
                }
                for value in map.values() {
                    walk(value, title, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, title, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], "", &mut exprs);
    for var in dashboard["templating"]["list"].as_array().expect("templating") {
        if let Some(query) = var["definition"].as_str() {
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable query `{query}`: only label_values(metric, label) is checked"));
            let metric = inner.split(',').next().unwrap().trim();
            exprs.push((format!("variable {}", var["name"]), metric.to_string()));
        }
    }
    (dashboard, exprs)
}

/// Grafana's variables replaced by what they stand for at query time, so that promtool reads plain PromQL.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
}

/// The metric names an expression selects: identifiers that are not functions or aggregations (followed by `(`),
/// keywords, label names (inside `{…}`, or in the lists after `by`/`without`/`on`/`ignoring`/`group_left`/
/// `group_right`), strings, numbers or durations. Enough for the expressions of `ops/`, and tested below.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];
    // Aggregations may be followed by `by (…)` / `without (…)` rather than by their parenthesis.
    const AGGREGATIONS: [&str; 13] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
    ];
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening bracket to just past its closing one, over strings (which may hold brackets).
    let skip = |mut i: usize, close: char| -> usize {
        while i < chars.len() && chars[i] != close {
            if matches!(chars[i], '"' | '\'' | '`') {
                let quote = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip(i + 1, c);
        } else if c == '{' {
            i = skip(i + 1, '}');
        } else if c == '[' {
            i = skip(i + 1, ']');
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers, durations (`5m`), exponents (`1e3`): never names.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let opens = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&ident.as_str()) {
                if opens {
                    i = skip(next + 1, ')');
                }
            } else if !opens
                && !KEYWORDS.contains(&ident.to_ascii_lowercase().as_str())
                && !AGGREGATIONS.contains(&ident.as_str())
            {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_come_from_selectors_only() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"histogram_quantile(0.95, sum by (channel, le) (rate(a_bucket{x="}",y=~"$i"}[$__rate_interval])))"#),
        ["a_bucket"]
    );
    assert_eq!(names("x / on(instance) group_left(job) y > bool 1e3 unless z offset 5m"), ["x", "y", "z"]);
    assert_eq!(names("up{job=\"dc\"} == 0 and sum without (foo) (rate(w[5m:1m]))"), ["up", "w"]);
    assert_eq!(names("sum(q) by (reason) > 0 or predict_linear(n[6h], 24 * 3600) < 0"), ["n", "q"]);
    assert_eq!(names("label_values_are_not_here"), ["label_values_are_not_here"]);
}

/// Sample names of a Prometheus text exposition (`x_bucket`, `x_sum`, `x_count` for a histogram `x`).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_expression_of_the_dashboard_and_the_rules_parses_and_names_an_exported_metric() {
    let (dashboard, panels) = dashboard_expressions();
    let rules = rule_expressions();
    // What an operations team expects to find (issue 27): a row each.
    let rows: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for row in ["Ingest", "Rules", "Alerts", "Dissemination", "Websockets", "Store and InfluxDB sink"] {
        assert!(rows.contains(&row), "dashboard rows {rows:?} lack `{row}`");
    }
    let all_exprs: String = panels.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().join("\n");
    for grouping in ["sum by (state) (dc_alerts", "sum by (channel, result) (rate(dc_dissemination_deliveries_total"] {
        assert!(all_exprs.contains(grouping), "the dashboard shows `{grouping}…`");
    }

    // Parse: each expression as a recording rule of a generated file (JSON is YAML) for `promtool check rules`.
    let checked: Vec<(String, String)> = panels
        .iter()
        .chain(rules.iter())
        .map(|(title, expr)| (title.clone(), without_grafana_variables(expr)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let check = |exprs: &[&str]| -> Output {
        let rules: Vec<serde_json::Value> = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| serde_json::json!({ "record": format!("ops_check:expr_{i}"), "expr": e }))
            .collect();
        let file = dir.path().join("generated.yml");
        let doc = serde_json::json!({ "groups": [{ "name": "every-expression-of-ops", "rules": rules }] });
        std::fs::write(&file, doc.to_string()).unwrap();
        promtool(&["check", "rules", file.to_str().unwrap()])
    };
    let out = check(&checked.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>());
    assert!(out.status.success(), "an expression of ops/ does not parse:\n{}\n{checked:#?}", text(&out));
    // The check can fail: one unbalanced parenthesis is refused.
    assert!(!check(&["sum(rate(dc_ingest_readings_accepted_total[5m])"]).status.success());

    // Names: a fresh demo (no event yet) on ports this test picks, scraped once.
    let server = Server::start();
    let (status, exposition) = server.get("/metrics");
    assert_eq!(status, 200);
    let exported = exported_names(&exposition);
    assert!(exported.len() > 50, "a short /metrics: {exported:?}");
    let not_ours: BTreeSet<&str> = NOT_OURS.iter().map(|(n, _)| *n).collect();
    for (name, why, source) in ONLY_WHERE_CONFIGURED {
        assert!(!exported.contains(name), "{name} is exported by the demo now: move it out of ONLY_WHERE_CONFIGURED");
        let text = std::fs::read_to_string(repo(source)).unwrap();
        assert!(text.contains(&format!("\"{name}\"")), "{name} ({why}) is no longer registered in {source}");
    }
    let mut missing = Vec::new();
    for (title, expr) in &checked {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "`{title}`: no metric found in `{expr}`");
        for name in names {
            let configured = ONLY_WHERE_CONFIGURED.iter().any(|(n, _, _)| *n == name);
            if !exported.contains(&name) && !not_ours.contains(name.as_str()) && !configured {
                missing.push(format!("{title}: {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "named in ops/ but not on a fresh demo's /metrics:\n{}", missing.join("\n"));
    // The names from elsewhere are used by the rules only, never by the dashboard of our own metrics.
    for (title, expr) in &panels {
        assert!(metric_names(expr).iter().all(|n| !not_ours.contains(n.as_str())), "{title}: {expr}");
    }
}

#[test]
fn the_systemd_unit_verifies_and_stays_hardened() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!(
            "SKIPPED: systemd-analyze is not installed here (it comes with the systemd package); \
             ops/systemd/disaster-cloud.service was not verified"
        );
        return;
    }
    let unit = std::fs::read_to_string(repo("ops/systemd/disaster-cloud.service")).unwrap();
    for line in [
        "DynamicUser=yes",
        "StateDirectory=disaster-cloud",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "EnvironmentFile=/etc/disaster-cloud/secrets.env",
    ] {
        assert!(unit.contains(line), "the unit has `{}`", line.trim());
    }
    assert!(unit.lines().any(|l| l.starts_with("RestrictAddressFamilies=")) && unit.contains("\nMemoryMax="));
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disaster-cloud.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/disaster-cloud", env!("CARGO_BIN_EXE_disaster-cloud"))).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", file.to_str().unwrap()]).output().unwrap();
    let said = text(&out);
    // An unknown or misspelt key is only a warning (exit 0): any line about our unit fails the test.
    let about_ours: Vec<&str> = said.lines().filter(|l| l.contains("disaster-cloud.service")).collect();
    assert!(out.status.success() && about_ours.is_empty(), "systemd-analyze verify:\n{said}");
    // `systemd-analyze security` scores exposure from 0 (locked down) to 10; above 2.0 a hardening line was lost.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "exposure above 2.0:\n{}", text(&out));
}
