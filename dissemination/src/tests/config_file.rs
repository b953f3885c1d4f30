//! The shipped `config/dissemination.toml` and the errors a bad file gets.

use super::*;
use crate::channel::cbc::{default_policy, PolicyClass};

fn resolve(text: &str) -> Result<config::Resolved, FieldError> {
    let cfg = DisseminationConfig::from_toml_str(text)?;
    cfg.resolve(&geo(), &templates(), &|k| (k == "SET_VAR").then(|| "from-the-environment-123".into()), BASE_URL)
}

#[test]
fn shipped_file_loads_and_matches_the_defaults() {
    let r = resolve(&SHIPPED_CONFIG.replace("{public_url}", "http://127.0.0.1:8080"))
        .unwrap_or_else(|e| panic!("config/dissemination.toml: {e}"));
    assert_eq!(r.webhook.subscribers.len(), 2);
    assert_eq!(r.webhook.subscribers[0].filters.modes, [ViewMode::Actual]);
    assert_eq!(r.cbc.carriers.len(), 3);
    assert_eq!(r.cbc.carriers[2].mnc, 1, "FarEasTone's 01");
    assert_eq!(r.cbc.policy, default_policy(), "the file spells out exactly the built-in policy");
    assert_eq!(r.webhook.retry.max_attempts, 8);
    assert_eq!(r.cbc.schedule.repetition_period_s, 60);
}

#[test]
fn errors_name_the_key() {
    let base = "sender = \"a@b.tw\"\n";
    let e = resolve(&format!("{base}[webhooks]\nmax_attempt = 3\n")).unwrap_err();
    assert!(e.message.contains("max_attempt"), "{e}");
    let e = resolve("").unwrap_err();
    assert!(e.message.contains("sender"), "{e}");
    let e = resolve("sender = \"a b\"").unwrap_err();
    assert_eq!(e.field, "sender");

    let sub = |extra: &str| format!("{base}[[subscriber]]\nname = \"s\"\nurl = \"https://x.tw/h\"\n{extra}\n");
    assert_eq!(resolve(&sub("")).unwrap_err().field, "subscriber[0].secret");
    assert_eq!(resolve(&sub("secret_env = \"UNSET_VAR\"")).unwrap_err().field, "subscriber[0].secret_env");
    assert!(resolve(&sub("secret_env = \"SET_VAR\"")).is_ok());
    assert_eq!(
        resolve(&sub("secret = \"0123456789abcdef\"\n[subscriber.filters]\nzones = [\"nowhere\"]")).unwrap_err().field,
        "subscriber[0].filters.zones[0]"
    );
    let e = resolve(&sub("secret = \"0123456789abcdef\"\n[subscriber.filters]\nmodes = [\"Real\"]")).unwrap_err();
    assert!(e.message.contains("Real"), "{e}");

    let policy = |rule: &str| format!("{base}[[cell_broadcast.policy]]\n{rule}\n");
    let e = resolve(&policy("class = \"presidential\"")).unwrap_err();
    assert_eq!(e.field, "cell_broadcast.policy[0].class");
    let e = resolve(&policy("class = \"emergency\"\nemergency_level = 9")).unwrap_err();
    assert_eq!(e.field, "cell_broadcast.policy[0].emergency_level");
    let e = resolve(&policy("class = \"alert\"\nevent = \"tsunami\"")).unwrap_err();
    assert_eq!(e.field, "cell_broadcast.policy[0].event");
    let r = resolve(&policy("class = \"none\"\nevent = \"heavy_rain\"")).unwrap();
    assert_eq!(r.cbc.policy[0].class, PolicyClass::None);

    let carrier = |extra: &str| format!("{base}[[carrier]]\nname = \"C\"\nmcc = \"466\"\n{extra}\n");
    assert_eq!(
        resolve(&carrier("mnc = \"9\"\ncbc_url = \"https://c.tw/\"\ntoken = \"t\"")).unwrap_err().field,
        "carrier[0].mnc"
    );
    assert_eq!(
        resolve(&carrier("mnc = \"92\"\ncbc_url = \"ftp://c.tw/\"\ntoken = \"t\"")).unwrap_err().field,
        "carrier[0].cbc_url"
    );
    assert_eq!(resolve(&carrier("mnc = \"92\"\ncbc_url = \"https://c.tw/\"")).unwrap_err().field, "carrier[0].token");
}

#[test]
fn bad_base_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Dissemination::start(config(""), dir.path(), geo(), templates(), "alerts.example.tw".into())
        .err()
        .expect("refused");
    assert!(matches!(e, DisseminationError::BaseUrl(_)), "{e}");
}

#[test]
fn starts_and_stops_outside_a_runtime_and_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Dissemination>();
    let dir = tempfile::tempdir().unwrap();
    let d = Arc::new(start(config(""), dir.path()));
    let d2 = d.clone();
    std::thread::spawn(move || d2.alert_changed(&view("PLAIN", 1))).join().unwrap();
    assert!(d.cap_xml("PLAIN.1").is_some());
    drop(d);
}
