//! Fixtures and helpers the diagnose tests share: the redis-server 7.0.15 fixtures,
//! changed where a test says, and ways to look up findings.
use std::collections::HashMap;

use super::{Finding, Severity};
use crate::sources::redis::{
    ClientEntry, RedisConfig, parse_client_list, parse_config, parse_info,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/redis/");

pub(super) fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `redis-cli CONFIG GET` output (name and value on alternate lines) -> pairs.
pub(super) fn config_pairs() -> Vec<(String, String)> {
    let text = fixture("config-get-7.0.15.txt");
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks_exact(2)
        .map(|kv| (kv[0].to_string(), kv[1].to_string()))
        .collect()
}

/// The fixture's configuration with some parameters replaced.
pub(super) fn config_with(changes: &[(&str, &str)]) -> RedisConfig {
    let mut pairs = config_pairs();
    for (k, v) in changes {
        match pairs.iter_mut().find(|(name, _)| name == k) {
            Some(p) => p.1 = v.to_string(),
            None => pairs.push((k.to_string(), v.to_string())),
        }
    }
    parse_config(&pairs)
}

pub(super) fn info_with(changes: &[(&str, &str)]) -> HashMap<String, String> {
    let mut info = parse_info(&fixture("info-7.0.15.txt"));
    for (k, v) in changes {
        info.insert(k.to_string(), v.to_string());
    }
    info
}

pub(super) fn clients() -> Vec<ClientEntry> {
    parse_client_list(&fixture("client-list-7.0.15.txt"))
}

pub(super) fn client_mut(clients: &mut [ClientEntry], id: u64) -> &mut ClientEntry {
    clients.iter_mut().find(|c| c.id == id).expect("client id")
}

pub(super) fn titles(findings: &[Finding]) -> Vec<(Severity, &str)> {
    findings
        .iter()
        .map(|f| (f.severity, f.title.as_str()))
        .collect()
}

pub(super) fn find<'a>(findings: &'a [Finding], needle: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.title.contains(needle))
        .unwrap_or_else(|| panic!("no finding with {needle:?} in {:#?}", titles(findings)))
}

pub(super) fn finding(severity: Severity, title: &str) -> Finding {
    Finding::new(severity, title, vec![format!("source: {title}")], "do it")
}
