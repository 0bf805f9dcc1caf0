//! The report over real and hand-made captures (tests/fixtures/captures/, see its README).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;
use crate::diagnose::finding::{Finding, Severity};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/captures")
        .join(name)
}

const PUBSUB: &str = "redis-host-pubsub.jsonl";
const REAL: &str = "real-demo-7.0.15.jsonl";
const DB_END: &str = "both-ends-redis-host.jsonl";
const APP_END: &str = "both-ends-app-host.jsonl";

fn opts(redact: bool) -> ReportOptions<'static> {
    ReportOptions {
        redact,
        chart_name: "incident.svg".into(),
        findings: None,
    }
}

fn report(names: &[&str], redact: bool) -> Rendered {
    let paths: Vec<PathBuf> = names.iter().map(|n| fixture(n)).collect();
    let caps = load(&paths).expect("fixtures load");
    render(&caps, &opts(redact)).expect("render")
}

/// A scratch directory of its own per test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let d =
            std::env::temp_dir().join(format!("redis-trace-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Self(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn records(name: &str) -> Vec<Value> {
    std::fs::read_to_string(fixture(name))
        .expect("fixture")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn of_type<'a>(recs: &'a [Value], t: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["type"] == t).collect()
}

fn declared_by_cause(recs: &[Value]) -> BTreeMap<String, u64> {
    let ended = of_type(recs, "capture_ended")[0];
    ended["by_cause"]
        .as_object()
        .expect("by_cause")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
        .collect()
}

/// The rows of the timeline table.
fn timeline_rows(md: &str) -> Vec<&str> {
    let section = md
        .split("\n## Timeline\n")
        .nth(1)
        .expect("a timeline section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1) // the header; the |---| line does not start with "| "
        .collect()
}

/// Cell borders in a GFM table row: pipes not escaped by a backslash.
fn cell_borders(row: &str) -> usize {
    let b = row.as_bytes();
    (0..b.len())
        .filter(|&i| b[i] == b'|' && (i == 0 || b[i - 1] != b'\\'))
        .count()
}

#[test]
fn verdict_names_the_dominant_cause_and_counts_match_the_capture() {
    let r = report(&[PUBSUB], false);
    let recs = records(PUBSUB);
    assert_eq!(r.summary.by_cause, declared_by_cause(&recs));
    assert_eq!(r.summary.connections, 40);
    assert_eq!(
        r.summary.dominant_cause.as_deref(),
        Some("redis_output_buffer_limit")
    );
    let verdict = r
        .markdown
        .split("## Verdict\n\n")
        .nth(1)
        .and_then(|v| v.lines().next())
        .expect("a verdict");
    assert!(
        verdict.starts_with(
            "**37 of 40 connection ends** (`redis_output_buffer_limit`): Redis closed pub/sub \
             subscribers for the output buffer limit (`pubsub 32mb 8mb 60`)."
        ),
        "{verdict}"
    );
    assert!(
        verdict.contains("**3** (`client_reset`): a client aborted."),
        "{verdict}"
    );
    // The client resets came from a PHP worker the OOM killer had just chosen.
    assert!(r.markdown.contains(
        "`kernel: the OOM killer chose php-fpm8.2 (pid 22104) 3.2 ms before this close`"
    ));
    // The dominant cause's fix comes with it.
    assert!(r.markdown.contains("Drain consumers promptly"));
    assert!(r.markdown.contains("Not checked: no risk diagnosis"));
    // Header: host, kernel, Redis, window, ports, tool, probes unavailable.
    for want in [
        "`cache-01`",
        "`6.1.0-27-amd64`",
        "Redis `7.0.15`, pid 1187, up 14 days",
        "2026-11-24 09:00:00.114 → 09:10:00.118 UTC (10 min)",
        "6379 (`redis-server`, pid 1187)",
        "redis-trace `0.1.0`",
        "`sock:inet_sk_error_report`",
    ] {
        assert!(r.markdown.contains(want), "missing {want:?}");
    }
    // Examples: at most three per cause.
    let obl = r
        .markdown
        .split("### `redis_output_buffer_limit` (37)")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("examples");
    assert!(obl.contains("3 of 37"));
    assert_eq!(
        obl.matches("\n1. ").count() + obl.matches("\n2. ").count() + obl.matches("\n3. ").count(),
        3
    );
    assert!(!obl.contains("\n4. "));
}

#[test]
fn timeline_has_one_row_per_connection_closed() {
    for name in [PUBSUB, REAL, DB_END, APP_END] {
        let r = report(&[name], false);
        let recs = records(name);
        let closed = of_type(&recs, "connection_closed").len();
        let rows = timeline_rows(&r.markdown);
        assert_eq!(rows.len(), closed, "{name}");
        assert_eq!(r.summary.connections as usize, closed, "{name}");
        assert_eq!(r.summary.by_cause, declared_by_cause(&recs), "{name}");
        for row in rows {
            assert_eq!(cell_borders(row), 8, "{name}: {row}");
        }
    }
}

#[test]
fn the_real_capture_reads_as_the_demo_ran() {
    let r = report(&[REAL], false);
    assert_eq!(r.summary.lost_events, 0);
    assert_eq!(r.summary.by_cause.get("redis_idle_timeout"), Some(&2));
    // Ties break in the order of the causes: Redis's own first.
    assert_eq!(
        r.summary.dominant_cause.as_deref(),
        Some("redis_idle_timeout")
    );
    assert!(r.markdown.contains(
        "**2 of 7 connection ends** (`redis_idle_timeout`): Redis closed idle connections at \
         its `timeout` (2 s)."
    ));
    assert!(r.markdown.contains(
        "Redis closed a pub/sub subscriber for the output buffer limit (`pubsub 256kb 128kb 10`)."
    ));
    // Its name, from Redis's log line (CLIENT LIST never saw it).
    assert!(
        r.markdown
            .contains("| `127.0.0.1:58198` | `slow-subscriber` |")
    );
    assert!(
        r.markdown
            .contains("**OOM kill** of `redis-server` (pid 3602, the traced Redis)")
    );
    assert!(
        r.markdown
            .contains("by `id=9 addr=127.0.0.1:58214 name=ops-console`")
    );
    // The chart: a bar per cause present, the OOM kill marked once (its SIGKILL is the
    // OOM killer's own), the link to it in the Markdown.
    assert!(
        r.svg
            .starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"")
    );
    assert!(r.svg.trim_end().ends_with("</svg>"));
    assert!(r.svg.contains("OOM kill of redis-server (pid 3602)"));
    assert!(!r.svg.contains("SIGKILL"));
    for cause in r.summary.by_cause.keys() {
        let c = crate::cause::Cause::named(cause).expect("a cause");
        assert!(r.svg.contains(c.chart_colour()), "{cause}");
    }
    assert!(
        r.markdown
            .contains("![connection ends over time](incident.svg)")
    );
}

#[test]
fn restarts_and_fatal_signals_are_marked_on_the_chart() {
    let mut cap = load(&[fixture(REAL)]).expect("load").remove(0);
    cap.records.insert(
        cap.records.len() - 1,
        record(
            serde_json::json!({"type": "redis_status", "time": "2026-11-25T17:07:02.500000Z",
            "port": 39573, "status": "connected", "pid": 3700, "version": "7.0.15",
            "uptime_s": 1, "restarted": true, "error": null, "logfile": null,
            "log_readable": true}),
        ),
    );
    cap.records.insert(
        cap.records.len() - 1,
        record(
            serde_json::json!({"type": "process_event", "time": "2026-11-25T17:07:02.700000Z",
            "event": "signal", "pid": 3700, "comm": "redis-server", "redis": true,
            "signal": {"number": 15, "name": "SIGTERM", "origin": "user",
                "sender": {"pid": 1, "comm": "systemd"}, "result": "delivered"}}),
        ),
    );
    let r = render(&[cap], &opts(false)).expect("render");
    assert!(r.svg.contains(">restart<") && r.svg.contains("Redis restart seen on port 39573"));
    assert!(
        r.svg.contains(">SIGTERM<")
            && r.svg
                .contains("SIGTERM to redis-server (pid 3700) from systemd")
    );
    assert!(
        r.svg.contains(">Redis restart<") && r.svg.contains(">fatal signal<"),
        "legend"
    );
    assert!(
        r.markdown
            .contains("**Redis restarted** on port 39573: now pid 3700")
    );
    assert!(r.markdown.contains("**1 restart**"));
}

#[test]
fn chart_buckets_cover_the_window_with_about_sixty_bars() {
    let r = report(&[PUBSUB], false);
    assert!(r.svg.contains("per 10 s"), "a 10 min window: 10 s buckets");
    // 37 + 3 connection ends in the bars' tooltips.
    let total: u64 = r
        .svg
        .split("<title>")
        .filter_map(|t| t.split("</title>").next())
        .filter_map(|t| t.split(": ").nth(1))
        .filter_map(|t| t.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 40);
    assert!(r.svg.contains(">OOM<"), "the OOM kill is marked");
}

#[test]
fn a_window_of_millennia_still_makes_a_chart_of_about_sixty_bars() {
    // Found while fuzzing the report (the report_jsonl target now checks the chart's
    // size): a capture of two lines dated 1970 and 9999 made buckets and ticks of one week
    // each, 417,000 of them, in a 60 MB SVG.
    let text = format!(
        "{}\n{}\n",
        r#"{"type":"capture_started","schema_version":1,"time":"1970-01-01T00:00:01Z","host":"h","ports":[{"port":6379}]}"#,
        r#"{"type":"connection_closed","time":"9999-12-31T00:00:00Z","cause":"client_close","server":"127.0.0.1:6379","client":"127.0.0.1:50000"}"#
    );
    let cap = parse_capture(Path::new("wide.jsonl"), text.as_bytes()).expect("parses");
    let r = render(&[cap], &opts(false)).expect("render");
    assert!(r.svg.len() < 64 * 1024, "{} bytes of SVG", r.svg.len());
    let ticks = r
        .svg
        .matches("text-anchor=\"middle\" fill=\"#555555\">")
        .count();
    assert!(ticks <= 12, "{ticks} time ticks");
    let bars = r.svg.matches("\"><title>").count();
    assert_eq!(bars, 1, "one connection end, one bar");
}

/// Every client address, bare client IP (not the server's), client name and client
/// process name that appears anywhere in a capture.
fn secrets(recs: &[Value]) -> Vec<String> {
    let mut server_ips = Vec::new();
    let mut out = Vec::new();
    let ip_of = |a: &str| a.rsplit_once(':').map(|(ip, _)| ip.to_string());
    for r in recs {
        if let Some(s) = r["server"].as_str() {
            server_ips.extend(ip_of(s));
        }
    }
    let names_in = |t: &str, out: &mut Vec<String>| {
        for part in t.split(" name=").skip(1) {
            let v = part.split(' ').next().unwrap_or("");
            if !v.is_empty() {
                out.push(v.to_string());
            }
        }
        for part in t.split("addr=").skip(1) {
            let v = part.split(' ').next().unwrap_or("");
            if !v.starts_with(server_ips.first().map(String::as_str).unwrap_or("-"))
                || !v.ends_with(":6379")
            {
                out.push(v.to_string());
            }
        }
    };
    for r in recs {
        if let Some(c) = r["client"].as_str() {
            out.push(c.to_string());
            if let Some(ip) = ip_of(c)
                && !server_ips.contains(&ip)
            {
                out.push(ip);
            }
        }
        if let Some(n) = r["redis_client"]["name"].as_str()
            && !n.is_empty()
        {
            out.push(n.to_string());
        }
        for e in r["evidence"].as_array().into_iter().flatten() {
            names_in(e.as_str().unwrap_or(""), &mut out);
        }
        if let Some(k) = r["killer"].as_str() {
            names_in(k, &mut out);
        }
        if r["closed_by_side"] == "client"
            && let Some(c) = r["comm"].as_str()
        {
            out.push(c.to_string());
        }
        if let Some(c) = r["client_process"]["comm"].as_str() {
            out.push(c.to_string());
        }
        if r["type"] == "process_event"
            && r["redis"] == false
            && let Some(c) = r["comm"].as_str()
        {
            out.push(c.to_string());
        }
    }
    // The demo's clients ran inside redis-trace itself: its name is also the tool's, which
    // the report names (the client's process name is still a pseudonym in the evidence).
    out.retain(|s| s != "redis-trace");
    out.sort();
    out.dedup();
    // laddr= is the server's own address: not a secret.
    out.retain(|s| !s.ends_with(":39573") && !s.ends_with(":6379"));
    out
}

#[test]
fn redact_leaves_no_client_address_name_or_process_in_markdown_or_svg() {
    for set in [&[PUBSUB][..], &[REAL], &[DB_END, APP_END]] {
        let r = report(set, true);
        let mut all = Vec::new();
        for name in set {
            all.extend(secrets(&records(name)));
        }
        assert!(all.len() >= 4, "{set:?}: {all:?}");
        for s in &all {
            assert!(
                !r.markdown.contains(s.as_str()),
                "{set:?}: {s:?} in the Markdown"
            );
            assert!(!r.svg.contains(s.as_str()), "{set:?}: {s:?} in the SVG");
        }
        // The same verdict, counts and timeline as without redaction.
        let plain = report(set, false);
        assert_eq!(
            serde_json::to_value(&r.summary).expect("json"),
            serde_json::to_value(&plain.summary).expect("json")
        );
        assert_eq!(
            timeline_rows(&r.markdown).len(),
            timeline_rows(&plain.markdown).len()
        );
        assert!(r.markdown.contains("pseudonyms"));
    }
}

#[test]
fn redact_keeps_one_pseudonym_per_client_and_the_server_as_it_is() {
    let r = report(&[REAL], true);
    let md = &r.markdown;
    // 127.0.0.1:58214 (ops-console) closed by its idle timeout, and named as the killer.
    let row = timeline_rows(md)
        .into_iter()
        .find(|row| row.contains("redis_idle_timeout") && row.contains(":58214"))
        .expect("ops-console's row");
    let addr = row
        .split('`')
        .find(|c| c.ends_with(":58214"))
        .expect("pseudonymised address")
        .to_string();
    assert!(addr.starts_with("host-"), "{addr}");
    let name = row
        .split('`')
        .find(|c| c.starts_with("client-"))
        .expect("pseudonymised name")
        .to_string();
    assert!(
        md.contains(&format!("addr={addr} name={name}")),
        "the killer"
    );
    // Redis's own identity stays: the server address, its process, its log line format.
    assert!(md.contains("`127.0.0.1:39573`"));
    assert!(md.contains("redis-server"));
    assert!(md.contains("laddr=127.0.0.1:39573"));
    // Stable: the same report twice is the same text.
    let again = report(&[REAL], true);
    assert_eq!(again.markdown, r.markdown);
    assert_eq!(again.svg, r.svg);
}

#[test]
fn redact_handles_odd_names_and_ipv6_clients() {
    let cap = edited(REAL, |r| {
        let (name, client) = match r["client"].as_str() {
            Some("127.0.0.1:41346") => ("ops console", "[2001:db8::7]:41346"),
            Some("127.0.0.1:58214") => ("svc.api:v2", "[2001:db8::7]:58214"),
            Some("127.0.0.1:58230") => ("w", "[::ffff:10.9.8.7]:58230"),
            _ => return,
        };
        let old = r["client"].as_str().unwrap_or("").to_string();
        let old_name = r["redis_client"]["name"].as_str().unwrap_or("").to_string();
        r["client"] = Value::from(client);
        if r["redis_client"].is_object() {
            r["redis_client"]["name"] = Value::from(name);
        } else {
            r["redis_client"] = serde_json::json!({"id": 1, "name": name, "flags": "N",
                "age": 1, "idle": 0, "omem": 0, "cmd": "get", "seen_at": r["time"]});
        }
        for e in r["evidence"].as_array_mut().into_iter().flatten() {
            let t = e.as_str().unwrap_or("").replace(&old, client);
            let t = if old_name.is_empty() {
                t
            } else {
                t.replace(&format!("name={old_name}"), &format!("name={name}"))
            };
            *e = Value::from(format!("{t} (client {name} at {client})"));
        }
    });
    let r = render(std::slice::from_ref(&cap), &opts(true)).expect("render");
    for secret in [
        "ops console",
        "svc.api:v2",
        "svc.api",
        "2001:db8::7",
        "10.9.8.7",
        "name=w ",
        "client w ",
    ] {
        assert!(!r.markdown.contains(secret), "{secret:?} in the Markdown");
        assert!(!r.svg.contains(secret), "{secret:?} in the SVG");
    }
    // One pseudonym per address, whatever its spelling.
    let rows = timeline_rows(&r.markdown);
    let host_of = |port: &str| {
        rows.iter()
            .find_map(|row| {
                row.split('`')
                    .find(|c| c.ends_with(port))
                    .map(str::to_owned)
            })
            .expect("row")
    };
    let a = host_of(":41346");
    let b = host_of(":58214");
    assert_eq!(a.split(':').next(), b.split(':').next(), "{a} {b}");
    assert!(a.starts_with("host-"), "{a}");
}

#[test]
fn two_captures_of_one_connection_prove_a_middlebox_reset_from_both_sides() {
    let r = report(&[DB_END, APP_END], false);
    assert_eq!(
        r.summary.connections, 4,
        "one row per connection, not per end"
    );
    assert_eq!(r.summary.middlebox_proven, 1);
    let want: BTreeMap<String, u64> = [
        ("client_close", 1),
        ("client_reset", 1),
        ("middlebox_reset", 1),
        ("redis_idle_timeout", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(r.summary.by_cause, want);
    assert_eq!(timeline_rows(&r.markdown).len(), 4);
    assert!(
        r.markdown
            .contains("proven from both sides: a middlebox reset")
    );
    let row = timeline_rows(&r.markdown)
        .into_iter()
        .find(|row| row.contains("10.0.3.7:40112"))
        .expect("the reset connection");
    assert!(
        row.contains("`middlebox_reset`") && row.contains("middlebox"),
        "{row}"
    );
    assert!(row.contains("both ends"), "{row}");
    assert!(
        row.contains("proven from both ends (captures on app-7 and db-01)"),
        "{row}"
    );
    assert!(r.markdown.contains("shows its TCP stack sent no RST"));
    // The client that aborted is a client reset, not a middlebox: its capture saw the RST
    // leave. And the idle timeout seen from the client host as "Redis closed it" takes
    // the Redis host's cause.
    let aborted = timeline_rows(&r.markdown)
        .into_iter()
        .find(|row| row.contains("10.0.3.7:40124"))
        .expect("the aborted connection");
    assert!(aborted.contains("`client_reset`"), "{aborted}");
    assert!(r.markdown.contains("[`app-7`]") || r.markdown.contains("[app-7]"));
    // Alone, each capture can only say peer_reset.
    for one in [DB_END, APP_END] {
        let r = report(&[one], false);
        assert_eq!(r.summary.middlebox_proven, 0);
        assert!(!r.summary.by_cause.contains_key("middlebox_reset"), "{one}");
        assert!(r.summary.by_cause.contains_key("peer_reset"), "{one}");
    }
}

fn edited(name: &str, edit: impl Fn(&mut Value)) -> Capture {
    let mut recs = records(name);
    for r in &mut recs {
        edit(r);
    }
    let text: String = recs.iter().map(|r| format!("{r}\n")).collect();
    parse_capture(&fixture(name), text.as_bytes()).expect("the edited capture reads")
}

fn record(v: Value) -> crate::schema::Record {
    serde_json::from_value(v).expect("a record")
}

#[test]
fn no_middlebox_claim_without_a_capture_able_to_see_the_other_end_send() {
    let db = load(&[fixture(DB_END)]).expect("load").remove(0);
    // The app host's capture could not see RSTs being sent.
    let blind = edited(APP_END, |r| {
        if r["type"] == "capture_started" {
            r["probes_attached"] = serde_json::json!(["sock:inet_sock_set_state"]);
            r["probes_unavailable"] = serde_json::json!([{"probe": "tcp:tcp_send_reset",
                "why": "missing", "cost": "RSTs this host sends are unseen"}]);
        }
    });
    let r = render(&[db.clone(), blind], &opts(false)).expect("render");
    assert_eq!(
        r.summary.middlebox_proven, 1,
        "the Redis host still proves the server's side"
    );
    // Both sides blind: nothing proven.
    let db_blind = edited(DB_END, |r| {
        if r["type"] == "capture_ended" {
            r["lost_events"] = serde_json::json!(3);
        }
    });
    let app_blind = edited(APP_END, |r| {
        if r["type"] == "capture_started" {
            r["probes_attached"] = serde_json::json!(["sock:inet_sock_set_state"]);
        }
    });
    let r = render(&[db_blind, app_blind], &opts(false)).expect("render");
    assert_eq!(r.summary.middlebox_proven, 0);
    assert!(r.summary.by_cause.contains_key("peer_reset"));
    assert!(r.markdown.contains("cannot prove it was not"));
    assert!(r.markdown.contains("lost 3 events"));
    // The server's side shows its stack sending the RST the client received (Redis
    // aborted the connection): Redis closed it, no middlebox.
    let sent = edited(DB_END, |r| {
        if r["client"] == "10.0.3.7:40112" && r["type"] == "connection_closed" {
            r["cause"] = Value::from("redis_close_unknown");
            r["kernel_event"] = Value::from("aborted");
            r["closed_by_side"] = Value::from("server");
            r["resets"] = serde_json::json!([{"time": r["time"], "direction": "sent",
                "side": "server", "rst_reason": "TCP_ABORT_ON_CLOSE"}]);
        }
    });
    let app = load(&[fixture(APP_END)]).expect("load").remove(0);
    let r = render(&[sent, app], &opts(false)).expect("render");
    assert_eq!(r.summary.middlebox_proven, 0);
    assert_eq!(r.summary.by_cause.get("redis_close_unknown"), Some(&1));
    assert!(!r.summary.by_cause.contains_key("middlebox_reset"));
}

#[test]
fn written_files_are_private_and_side_by_side() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Scratch::new("write");
    let md = dir.0.join("incident.md");
    // An existing file keeps no looser mode.
    std::fs::write(dir.0.join("incident.svg"), "old").expect("old svg");
    std::fs::set_permissions(
        dir.0.join("incident.svg"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    assert_eq!(chart_name_for(&md), "incident.svg");
    let r = report(&[PUBSUB], false);
    let svg = write(&md, &r).expect("write");
    assert_eq!(svg, dir.0.join("incident.svg"));
    for p in [&md, &svg] {
        let mode = std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    assert_eq!(std::fs::read_to_string(&md).expect("md"), r.markdown);
    assert_eq!(std::fs::read_to_string(&svg).expect("svg"), r.svg);
    assert!(
        write(&dir.0.join("incident.svg"), &r).is_err(),
        "the chart would overwrite it"
    );
}

#[test]
fn a_capture_cut_short_is_reported_with_a_warning() {
    let dir = Scratch::new("truncated");
    let text = std::fs::read_to_string(fixture(REAL)).expect("fixture");
    // Killed while writing the line after the OOM kill's connection end.
    let cut = text
        .find("{\"type\":\"reset\",\"time\":\"2026-11-25T17:07:02")
        .expect("a late line");
    let p = dir.0.join("killed.jsonl");
    std::fs::write(&p, &text[..cut + 40]).expect("write");
    let caps = load(std::slice::from_ref(&p)).expect("a truncated last line is tolerated");
    let r = render(&caps, &opts(false)).expect("render");
    assert_eq!(
        r.summary.connections, 7,
        "everything before the cut is there"
    );
    let top = r.markdown.split("## Verdict").next().expect("top");
    assert!(top.contains("is cut short"), "{top}");
    assert!(top.contains("did not end cleanly"), "{top}");
    assert!(top.contains("unknown (no capture_ended)"));
    // The same damage in the middle is an error naming the file and line.
    let mut lines: Vec<&str> = text.lines().collect();
    lines[4] = &lines[4][..30];
    let p = dir.0.join("damaged.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").expect("write");
    let e = load(&[p]).expect_err("damage in the middle").to_string();
    assert!(e.contains("damaged.jsonl:5:"), "{e}");
}

#[test]
fn a_file_that_is_not_a_capture_is_an_error_saying_so() {
    let dir = Scratch::new("notcapture");
    let cases = [
        (
            "notes.md",
            "# Postmortem\n\nRedis dropped connections.\n".to_string(),
        ),
        ("empty.jsonl", String::new()),
        (
            "closed-only.jsonl",
            std::fs::read_to_string(fixture(REAL))
                .expect("fixture")
                .lines()
                .skip(2)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ];
    for (name, body) in cases {
        let p = dir.0.join(name);
        std::fs::write(&p, body).expect("write");
        let e = load(&[fixture(REAL), p]).expect_err(name).to_string();
        assert!(e.contains(name), "{e}");
        assert!(e.contains("not a redis-trace capture"), "{e}");
    }
    let e = load(&[dir.0.join("missing.jsonl")])
        .expect_err("missing")
        .to_string();
    assert!(e.contains("missing.jsonl"), "{e}");
}

#[test]
fn lost_events_are_stated_at_the_top() {
    let lossy = edited(PUBSUB, |r| {
        if r["type"] == "capture_ended" {
            r["lost_events"] = serde_json::json!(12);
        }
    });
    let r = render(&[lossy], &opts(false)).expect("render");
    assert_eq!(r.summary.lost_events, 12);
    let top = r
        .markdown
        .split("\n| | |")
        .next()
        .expect("above the header");
    assert!(top.contains("**Incomplete capture:**"), "{top}");
    assert!(top.contains("lost 12 events"), "{top}");
}

#[test]
fn lost_events_of_several_captures_add_up_without_overflow() {
    // Found while fuzzing the report (report_jsonl, two captures in one input): the lost
    // counts of the files were summed with `+`, which overflowed on counts near u64::MAX.
    let lossy = |n: u64| {
        edited(PUBSUB, |r| {
            if r["type"] == "capture_ended" {
                r["lost_events"] = serde_json::json!(n);
            }
        })
    };
    let r = render(&[lossy(u64::MAX), lossy(1)], &opts(false)).expect("render");
    assert_eq!(r.summary.lost_events, u64::MAX);
    let r = render(&[lossy(5), lossy(7)], &opts(false)).expect("render");
    assert_eq!(r.summary.lost_events, 12);
}

/// A Markdown line without its code spans (CommonMark: a run of n backticks opens one,
/// the next run of exactly n closes it).
fn outside_code(line: &str) -> String {
    let b = line.as_bytes();
    let run = |i: usize| b[i..].iter().take_while(|c| **c == b'`').count();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'`' {
            out.push(b[i] as char);
            i += 1;
            continue;
        }
        let n = run(i);
        let mut j = i + n;
        let mut closed = None;
        while j < b.len() {
            if b[j] == b'`' {
                let m = run(j);
                if m == n {
                    closed = Some(j + m);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match closed {
            Some(end) => i = end,
            None => {
                out.push_str(&line[i..i + n]);
                i += n;
            }
        }
    }
    out
}

#[test]
fn client_text_renders_harmlessly() {
    let evil = "w|x`y``<script>alert(1)</script>\n# h1 [l](http://e.x) @admin \u{202e}fdp.exe";
    let cap = edited(REAL, |r| {
        if r["type"] == "connection_closed" && r["client"] == "127.0.0.1:41346" {
            r["redis_client"]["name"] = Value::from(evil);
            r["evidence"]
                .as_array_mut()
                .expect("evidence")
                .insert(1, Value::from(format!("CLIENT LIST: name={evil}")));
            r["comm"] = Value::from("</text><script>x</script>");
        }
    });
    for redact in [false, true] {
        let r = render(std::slice::from_ref(&cap), &opts(redact)).expect("render");
        for row in timeline_rows(&r.markdown) {
            assert_eq!(cell_borders(row), 8, "{row}");
        }
        // No line break, heading or bidi override gets through; HTML only in code spans.
        assert!(!r.markdown.contains("\n# h1"));
        assert!(!r.markdown.contains('\u{202e}'));
        assert!(!r.svg.contains("<script"));
        assert!(!r.svg.contains('\u{202e}'));
        for line in r.markdown.lines().filter(|l| l.contains("<script>")) {
            let outside = outside_code(line);
            assert!(
                !outside.contains('<') && !outside.contains("# h1"),
                "{line}"
            );
        }
        if redact {
            assert!(!r.markdown.contains("alert(1)"), "the name is a pseudonym");
        }
    }
}

#[test]
fn findings_are_rendered_by_severity_or_said_unchecked() {
    let caps = load(&[fixture(REAL)]).expect("load");
    let findings = [
        Finding {
            severity: Severity::Warning,
            title: "tcp-keepalive is 0".into(),
            evidence: vec!["config: tcp-keepalive 0".into()],
            fix: "CONFIG SET tcp-keepalive 60".into(),
        },
        Finding {
            severity: Severity::Critical,
            title: "no maxmemory".into(),
            evidence: vec!["INFO: maxmemory 0, client 127.0.0.1:58214 name=ops-console".into()],
            fix: "set maxmemory and vm.overcommit_memory=1".into(),
        },
    ];
    let o = ReportOptions {
        redact: true,
        chart_name: "x.svg".into(),
        findings: Some(&findings),
    };
    let md = render(&caps, &o).expect("render").markdown;
    let crit = md.find("**Critical: no maxmemory**").expect("critical");
    let warn = md.find("**Warning: tcp-keepalive is 0**").expect("warning");
    assert!(crit < warn, "most severe first");
    assert!(!md.contains("ops-console") && !md.contains("127.0.0.1:58214"));
    let o = ReportOptions {
        findings: Some(&[]),
        ..opts(false)
    };
    assert!(
        render(&caps, &o)
            .expect("render")
            .markdown
            .contains("Checked: no risks found.")
    );
    assert_eq!(
        serde_json::to_value(&findings[1]).expect("json")["severity"],
        "critical"
    );
}

#[test]
fn every_cause_has_its_own_chart_colour() {
    let mut seen = std::collections::HashSet::new();
    for c in crate::cause::Cause::ALL {
        assert!(seen.insert(c.chart_colour()), "{c} shares its colour");
    }
}

#[test]
fn redactor_finds_addresses_in_free_text() {
    let m = model::Model::build(&load(&[fixture(DB_END)]).expect("load"));
    let mut r = redact::Redactor::new(&m);
    let t = r.text(
        "addr=10.0.3.7:40112 laddr=10.0.0.5:6379 from 10.0.3.7. [2001:db8::7]:5000 \
         ::ffff:10.0.9.9 at 17:06:55.009 v7.0.15 name=checkout-api",
    );
    assert_eq!(
        t,
        "addr=host-1:40112 laddr=10.0.0.5:6379 from host-1. host-2:5000 host-3 at 17:06:55.009 \
         v7.0.15 name=client-1"
    );
}

/// A capture whose records are `PUBSUB`'s with `edit` applied, written to `dir`.
fn edited_capture(dir: &Scratch, edit: impl Fn(&mut Value)) -> PathBuf {
    let mut text = String::new();
    for mut r in records(PUBSUB) {
        edit(&mut r);
        text.push_str(&r.to_string());
        text.push('\n');
    }
    let path = dir.0.join("edited.jsonl");
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn hostile_header_fields_stay_in_their_cells() {
    let dir = Scratch::new("hostile-header");
    let path = edited_capture(&dir, |r| match r["type"].as_str() {
        Some("capture_started") => {
            r["host"] = "db|`01`|<b>x</b>".into();
            r["kernel"] = "6.1|``".into();
            r["tool_version"] = "0.1|`".into();
            r["ports"][0]["process"]["comm"] = "re|dis`".into();
            r["probes_unavailable"][0]["probe"] = "sock:|x`".into();
            r["probes_unavailable"][0]["why"] = "a|b".into();
        }
        Some("redis_status") => r["version"] = "7.0|`15".into(),
        _ => {}
    });
    let caps = load(&[path]).expect("load");
    let md = render(&caps, &opts(false)).expect("render").markdown;
    for key in ["Host", "Redis", "Ports", "Probes unavailable", "Tool"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {key} |")))
            .unwrap_or_else(|| panic!("no {key} row in:\n{md}"));
        assert_eq!(cell_borders(row), 3, "{key} row broken: {row}");
    }
    assert!(!md.contains("<b>x</b>") || md.contains("`db"), "{md}");
}

#[test]
fn a_capture_dated_near_year_9999_renders_without_panicking() {
    let dir = Scratch::new("year-9999");
    let path = edited_capture(&dir, |r| {
        if r.get("time").is_some() {
            r["time"] = "9999-12-31T23:59:59.999999Z".into();
        }
        if r["type"] == "redis_status" {
            r["uptime_s"] = u64::MAX.into();
        }
        if r["type"] == "connection_closed" {
            r["duration_ms"] = 1e300.into();
        }
    });
    let caps = load(&[path]).expect("load");
    let rendered = render(&caps, &opts(false)).expect("render");
    assert!(
        rendered.markdown.contains("9999-12-31"),
        "{}",
        rendered.markdown
    );
}

#[test]
fn report_reads_only_regular_files() {
    let err = load(&[PathBuf::from("/dev/null")]).expect_err("/dev/null is no capture");
    assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
}

#[test]
fn several_servers_on_one_host_get_a_table_by_server() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Two containers' servers on one node: every other record is the second's.
    let n = AtomicUsize::new(0);
    let cap = edited(REAL, |r| {
        if r["type"] == "connection_closed" {
            let i = n.fetch_add(1, Ordering::Relaxed);
            r["redis_server"] = if i.is_multiple_of(2) {
                serde_json::json!({"pid": 101, "netns": 4026532301_u64})
            } else {
                serde_json::json!({"pid": 202, "netns": 4026532302_u64,
                    "container": {"runtime": "docker", "id": "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"}})
            };
        }
    });
    let r = render(&[cap], &opts(false)).expect("render");
    assert!(r.markdown.contains("By server:"), "{}", r.markdown);
    assert!(
        r.markdown.contains("| `pid 101, netns 4026532301` | 4 |"),
        "{}",
        r.markdown
    );
    assert!(
        r.markdown
            .contains("| `docker 4f1e2d3c4b5a, pid 202, netns 4026532302` | 3 |"),
        "{}",
        r.markdown
    );
    // One server: no table.
    let one = report(&[REAL], false);
    assert!(!one.markdown.contains("By server:"));
}
