//! Redis over TLS: a TLS-only redis-server that requires client certificates is read
//! with `--redis-url rediss://... --tls-ca --tls-cert --tls-key`, and its evidence (the
//! CLIENT LIST entry) reaches the records; without the TLS options the capture says
//! which flags to add.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use scenario_tests::{Capture, Redis, free_port, private_dir, run_ok};
use serde_json::Value;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
fn make_certs(dir: &Path) {
    // openssl: scripts/setup.sh installs it.
    let run = |args: &[&str]| run_ok(Command::new("openssl").args(args).current_dir(dir));
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=redis-trace test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    // An extension makes an X.509 v3 certificate (rustls takes no other).
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for (name, ext) in [
        ("server", Some("server.ext")),
        ("client", Some("client.ext")),
    ] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        let mut args = vec![
            "x509".to_string(),
            "-req".into(),
            "-in".into(),
            format!("{name}.csr"),
            "-CA".into(),
            "ca.crt".into(),
            "-CAkey".into(),
            "ca.key".into(),
            "-CAcreateserial".into(),
            "-days".into(),
            "2".into(),
            "-out".into(),
            format!("{name}.crt"),
        ];
        if let Some(ext) = ext {
            args.extend(["-extfile".into(), ext.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args);
    }
}

/// A redis-server that listens with TLS only (certificates from `make_certs`),
/// requiring client certificates when `client_certs`; and its port.
fn tls_redis(certs: &Path, client_certs: bool) -> (Redis, u16) {
    let c = |f: &str| certs.join(f).display().to_string();
    let port = free_port();
    let port_s = port.to_string();
    let mut cli = vec!["--tls".to_string(), "--cacert".into(), c("ca.crt")];
    if client_certs {
        cli.extend([
            "--cert".into(),
            c("client.crt"),
            "--key".into(),
            c("client.key"),
        ]);
    }
    let cli: Vec<&str> = cli.iter().map(String::as_str).collect();
    let (cert, key, ca) = (c("server.crt"), c("server.key"), c("ca.crt"));
    let redis = Redis::start_with_ping(
        &[
            "--port",
            "0",
            "--tls-port",
            &port_s,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            if client_certs { "yes" } else { "no" },
        ],
        port,
        &cli,
    );
    (redis, port)
}

#[test]
fn a_tls_only_redis_with_client_certificates_is_read_over_tls() {
    let certs = private_dir("tls");
    make_certs(&certs);
    let c = |f: &str| certs.join(f).display().to_string();
    let (redis, tls_port) = tls_redis(&certs, true);
    let args: Vec<String> = [
        "capture",
        "--no-uprobes",
        "--json",
        "-",
        "--port",
        &tls_port.to_string(),
        "--redis-url",
        &format!("rediss://127.0.0.1:{tls_port}/"),
        "--tls-ca",
        &c("ca.crt"),
        "--tls-cert",
        &c("client.crt"),
        "--tls-key",
        &c("client.key"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cap = Capture::start_args(&args);
    // A TLS client that names itself, stays ~2 s (CLIENT LIST sees it), then quits.
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &tls_port.to_string(),
            "--tls",
            "--cacert",
            &c("ca.crt"),
        ])
        .args(["--cert", &c("client.crt"), "--key", &c("client.key")])
        .args(["-r", "2", "-i", "2", "CLIENT", "SETNAME", "tls-worker"])
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "redis-cli over TLS: {out:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let (records, err) = cap.stop_with(libc::SIGINT);
    let connected = records
        .iter()
        .any(|r| r["type"] == "redis_status" && r["status"] == "connected");
    assert!(connected, "not read over TLS; stderr:\n{err}");
    let named: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "connection_closed" && r["redis_client"]["name"] == "tls-worker")
        .collect();
    assert_eq!(
        named.len(),
        1,
        "the TLS client's CLIENT LIST entry should be in its record: {records:#?}\n{err}"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&certs);
}

#[test]
fn a_plain_read_of_a_tls_port_says_which_flags_to_add() {
    let certs = private_dir("tls-note");
    make_certs(&certs);
    let (redis, tls_port) = tls_redis(&certs, false);
    let cap = Capture::start(&[tls_port]);
    std::thread::sleep(Duration::from_millis(1500));
    let (records, err) = cap.stop_with(libc::SIGINT);
    let down = records
        .iter()
        .find(|r| r["type"] == "redis_status" && r["status"] == "unavailable")
        .unwrap_or_else(|| panic!("no unavailable status: {records:#?}\n{err}"));
    let why = down["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("speaks TLS") && why.contains("--tls-ca"),
        "{down}"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&certs);
}
