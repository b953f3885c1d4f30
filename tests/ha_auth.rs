//! `serve --cluster` and the NATS cluster's authentication: a process without its role's password does not start
//! (clear error before it connects), one with a wrong password is refused by the cluster and exits, one with its
//! role's credentials (`DC_CLUSTER_USER`, `DC_CLUSTER_PASSWORD`, as the HA tests' launcher passes them) starts.
//! What each role's user may do on the cluster is tested in `cluster/tests/auth.rs`.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cluster::test_support::NatsCluster;
use common::cluster_node::ClusterNode;
use common::{config_copy, free_port, test_env};

/// `serve --cluster … --role front-door` with `password` (none: not in the environment) in `DC_CLUSTER_PASSWORD`;
/// waits for it to exit (it must).
fn serve_front_door(nats: &NatsCluster, config: &std::path::Path, password: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_disaster-cloud"));
    test_env(&mut command)
        .env_remove("DC_CLUSTER_USER")
        .env_remove("DC_CLUSTER_PASSWORD")
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--data-dir", nats.dir.join("fd-refused").to_str().unwrap()])
        .args(["--cluster", &nats.urls_arg(), "--role", "front-door", "--client-id", "fd-1"])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--mqtt-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--mqtt5-listen", &format!("127.0.0.1:{}", free_port()), "--mqtt-tls=false"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(password) = password {
        command.env("DC_CLUSTER_PASSWORD", password);
    }
    let mut child = command.spawn().expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "serve kept running: {:?}",
                child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn serve_cluster_starts_only_with_its_roles_nats_credentials() {
    let nats = NatsCluster::start("ha-auth");
    let config = config_copy("ha-auth", |text| text.replace("dissemination = \"dissemination.toml\"\n", ""));

    // No password anywhere: refused before connecting, naming the file, the key and the variable.
    let refused = serve_front_door(&nats, &config, None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("cluster.password_env")
            && stderr.contains("DC_CLUSTER_PASSWORD is not set")
            && stderr.contains(config.to_str().unwrap()),
        "{stderr}"
    );

    // Another role's password: the cluster refuses the front door's user, and serve exits saying so.
    let refused = serve_front_door(&nats, &config, Some(nats.password("fan-out")));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("refused our credentials (user `front-door`)"), "{stderr}");

    // Its own: it starts and serves (the launcher passes DC_CLUSTER_USER and DC_CLUSTER_PASSWORD).
    let dir = nats.dir.join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    let fd = ClusterNode::start(&config, &dir, &nats.urls_arg(), "fd-1", "front-door", &[]);
    assert_eq!(fd.metric("dc_cluster_server_refusals_total{kind=\"permission\"}"), Some(0.0), "{}", fd.log());
}

#[test]
fn a_front_door_reaches_a_tls_cluster_with_its_ca_file() {
    let nats = NatsCluster::start_tls("ha-auth-tls");
    let ca = nats.ca_file.clone().expect("the test CA");
    let config = config_copy("ha-auth-tls", |text| {
        text.replace("dissemination = \"dissemination.toml\"\n", "")
            + &format!("\n[cluster]\nca_file = \"{}\"\n", ca.display())
    });
    let dir = nats.dir.join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    let fd = ClusterNode::start(&config, &dir, &nats.tls_urls().join(","), "fd-tls", "front-door", &[]);
    // The node it is connected to lists the connection with its TLS version and the user it logged in as (monitoring: `/connz?auth=true`).
    let connection = (0..3)
        .filter_map(|i| nats.monitor(i, "/connz?auth=true").map(|(_, body)| body))
        .filter_map(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .flat_map(|connz| connz["connections"].as_array().cloned().unwrap_or_default())
        .find(|c| c["name"] == "fd-tls")
        .unwrap_or_else(|| panic!("fd-tls is connected to no node; log:\n{}", fd.log()));
    assert!(connection["tls_version"].as_str().is_some_and(|v| v.starts_with("1.")), "{connection}");
    assert_eq!(connection["authorized_user"], "front-door", "{connection}");
}
