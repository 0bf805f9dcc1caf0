//! Scenario tests of the process events: a redis-server OOM-killed in a memory cgroup
//! of its own, and a redis-server killed with SIGKILL by another process. The real
//! binary, its real eBPF programs on this kernel, a real redis-server, real clients;
//! each checks the records field by field. Run as root, one at a time:
//! `cargo xtask test`.
use std::collections::HashMap;
use std::io::{BufReader, Read as _, Write as _};
use std::net::TcpStream;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scenario_tests::{
    Capture, MemCgroup, Redis, client_bin, client_local_addr, closed_for, require_root,
    wait_timeout,
};
use serde_json::Value;

/// Waits (at most `limit`) for redis-server to die by itself; panics otherwise.
fn wait_redis_dead(redis: &mut Redis, limit: Duration, why: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = redis.child.try_wait() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server (pid {}) still alive {} s after {why}",
            redis.pid(),
            limit.as_secs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The threads of a running process: tid -> comm (redis-server names its background
/// threads `bio_close_file`, `bio_aof_fsync`, `bio_lazy_free`, ...).
fn threads(pid: u32) -> HashMap<u64, String> {
    let dir = format!("/proc/{pid}/task");
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {dir}: {e}")) {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        out.insert(tid, comm.trim_end().to_string());
    }
    assert!(out.contains_key(&u64::from(pid)), "{dir}: {out:?}");
    out
}

/// Checks who closed a connection that redis-server's death ended. A killed process
/// closes its sockets in its exit path, when the last of its threads lets go of the fd
/// table (exit_files): `pid` is redis-server's, but `tid` and `comm` (documented as the
/// closing task) are whichever of its threads exited last, its main thread or a `bio_*`
/// thread, at random. So: one of its threads, named as that thread is.
fn assert_closed_by_a_redis_thread(c: &Value, pid: u32, threads: &HashMap<u64, String>) {
    assert_eq!(c["closed_by_side"], "server", "{c}");
    assert_eq!(c["pid"], pid, "{c}");
    let tid = c["tid"].as_u64().unwrap_or_else(|| panic!("no tid: {c}"));
    let name = threads.get(&tid).unwrap_or_else(|| {
        panic!("tid {tid} is not a thread of redis-server {pid} {threads:?}: {c}")
    });
    assert_eq!(c["comm"], name.as_str(), "{c}");
}

/// The one `process_event` of kind `event` for `pid`.
fn process_event(records: &[Value], event: &str, pid: u32) -> Value {
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "process_event" && r["event"] == event && r["pid"] == pid)
        .collect();
    let all: Vec<String> = records.iter().map(Value::to_string).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one process_event {event:?} for pid {pid}, got {}; records:\n{}",
        found.len(),
        all.join("\n")
    );
    found[0].clone()
}

#[test]
fn oom_kill_in_a_memory_cgroup() {
    use std::os::unix::process::ExitStatusExt as _;
    require_root();
    // Declared first, dropped last: after Redis's drop has killed and reaped it.
    let cg = MemCgroup::create();
    let script = cg.wrapper_script();
    // maxmemory 0 (no limit, the default): Redis grows until the kernel kills it.
    let mut redis = Redis::start_with(&["--maxmemory", "0"], Some(&["sh", "-c", script.as_str()]));
    let pid = redis.pid();
    assert!(
        cg.pids().contains(&(pid as i32)),
        "redis-server {pid} is not in {}: {:?}",
        cg.dir.display(),
        cg.pids()
    );
    let redis_threads = threads(pid);
    let cap = Capture::start(&[redis.port]);

    // 1 MiB SETs, at most 300: the 64 MiB group runs out after about 60.
    let mut client = Command::new(client_bin())
        .args(["fill", &redis.addr().to_string(), "300"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("rt-client");
    let mut out = BufReader::new(client.stdout.take().expect("stdout"));
    let client_addr = client_local_addr(&mut out);
    let status = wait_redis_dead(&mut redis, Duration::from_secs(60), "filling 300 MiB");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "redis-server should die of the OOM killer's SIGKILL: {status}"
    );
    assert!(
        wait_timeout(&mut client, Duration::from_secs(30)),
        "rt-client did not end within 30 s of redis-server's death"
    );
    let mut said = String::new();
    let _ = out.read_to_string(&mut said);
    let records = cap.stop();

    let oom = process_event(&records, "oom_kill", pid);
    assert_eq!(oom["comm"], "redis-server", "{oom}");
    assert_eq!(oom["redis"], true, "{oom}");
    assert!(
        oom["oom"]["anon_rss_kb"].as_u64().is_some_and(|kb| kb > 0),
        "{oom}"
    );
    // The OOM killer ran in the task whose charge failed: redis-server itself (its
    // main thread, reading the SET into its query buffer).
    assert_eq!(oom["oom"]["invoked_by"]["pid"], pid, "{oom}");

    // The OOM killer's SIGKILL, sent by the kernel from that same context.
    let sig = process_event(&records, "signal", pid);
    assert_eq!(sig["comm"], "redis-server", "{sig}");
    assert_eq!(sig["signal"]["number"], 9, "{sig}");
    assert_eq!(sig["signal"]["name"], "SIGKILL", "{sig}");
    assert_eq!(sig["signal"]["origin"], "kernel", "{sig}");
    assert_eq!(sig["signal"]["sender"]["pid"], pid, "{sig}");
    assert_eq!(sig["signal"]["result"], "delivered", "{sig}");

    let c = closed_for(&records, client_addr);
    assert_eq!(
        c["closed_by_side"], "server",
        "{c} (rt-client said {said:?})"
    );
    assert_eq!(c["cause"], "redis_oom_killed", "{c}");
    // The dying redis-server closes its sockets in its own exit path (exit_files).
    // Mostly the OOM kill comes while it reads a SET: data is left unread in the
    // receive queue and the close aborts the connection with a RST (TCP_ABORT_ON_CLOSE),
    // ESTABLISHED -> CLOSE in redis-server's context. When the kill comes between two
    // SETs (the kernel picks the moment), nothing is unread and the close is a FIN.
    assert_closed_by_a_redis_thread(&c, pid, &redis_threads);
    if c["packet"] == "RST" {
        assert_eq!(c["rst_reason"], "TCP_ABORT_ON_CLOSE", "{c}");
        assert_eq!(c["kernel_event"], "aborted", "{c}");
        assert!(
            said.contains("error 104"),
            "rt-client should see ECONNRESET: {said:?}"
        );
    } else {
        assert_eq!(c["packet"], "FIN", "{c}");
        assert_eq!(c["kernel_event"], "sent_fin", "{c}");
    }

    // The process's exit, named as the process is: its pid is the process's (tgid),
    // so is its comm, whichever of its threads happened to exit last.
    let exit = process_event(&records, "exit", pid);
    assert_eq!(exit["redis"], true, "{exit}");
    assert_eq!(exit["comm"], "redis-server", "{exit}");

    let ended = records.last().expect("records");
    assert_eq!(ended["type"], "capture_ended", "{ended}");
    assert_eq!(ended["lost_events"], 0, "{ended}");
    drop(redis);
    drop(cg);
}

#[test]
fn sigkill_from_another_process() {
    use std::os::unix::process::ExitStatusExt as _;
    let mut redis = Redis::start();
    let pid = redis.pid();
    let cap = Capture::start(&[redis.port]);

    // A connection open across the kill, idle (its PING answered, nothing unread).
    let mut s = TcpStream::connect_timeout(&redis.addr(), Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"PING\r\n").expect("write");
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).expect("read PONG");
    assert_eq!(&pong, b"+PONG\r\n");
    let local = s.local_addr().expect("addr");
    let redis_threads = threads(pid);

    let mut kill = Command::new("/bin/kill")
        .args(["-9", &pid.to_string()])
        .spawn()
        .expect("/bin/kill");
    let kill_pid = kill.id();
    assert!(
        wait_timeout(&mut kill, Duration::from_secs(10)),
        "kill did not end"
    );
    let status = wait_redis_dead(&mut redis, Duration::from_secs(10), "kill -9");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    // The server's close reaches us as EOF.
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).expect("EOF after the kill");
    assert_eq!(n, 0, "nothing more from a killed server");
    drop(s);
    let records = cap.stop();

    let sig = process_event(&records, "signal", pid);
    assert_eq!(sig["comm"], "redis-server", "{sig}");
    assert_eq!(sig["redis"], true, "{sig}");
    assert_eq!(sig["signal"]["number"], 9, "{sig}");
    assert_eq!(sig["signal"]["name"], "SIGKILL", "{sig}");
    assert_eq!(sig["signal"]["origin"], "user", "{sig}");
    assert_eq!(sig["signal"]["sender"]["pid"], kill_pid, "{sig}");
    assert_eq!(sig["signal"]["sender"]["comm"], "kill", "{sig}");
    assert_eq!(sig["signal"]["result"], "delivered", "{sig}");

    let c = closed_for(&records, local);
    // Nothing was left unread on the server's socket: its close in the exit path is
    // an orderly FIN, from redis-server's own context.
    assert_eq!(c["packet"], "FIN", "{c}");
    assert_eq!(c["rst_reason"], Value::Null, "{c}");
    assert_eq!(c["kernel_event"], "sent_fin", "{c}");
    assert_closed_by_a_redis_thread(&c, pid, &redis_threads);

    // The process's exit, named as the process is: its pid is the process's (tgid),
    // so is its comm, whichever of its threads happened to exit last.
    let exit = process_event(&records, "exit", pid);
    assert_eq!(exit["redis"], true, "{exit}");
    assert_eq!(exit["comm"], "redis-server", "{exit}");

    let ended = records.last().expect("records");
    assert_eq!(ended["type"], "capture_ended", "{ended}");
    assert_eq!(ended["lost_events"], 0, "{ended}");
}

/// redis-server processes are watched by name too: one started after the capture began
/// (so not among the pids it found at start) still has its SIGKILL and its exit
/// reported. Five of them, since which thread exits last varies from run to run.
#[test]
fn redis_servers_started_during_the_capture_are_watched_to_their_exit() {
    let traced = Redis::start();
    let cap = Capture::start(&[traced.port]);
    let mut pids = Vec::new();
    for _ in 0..5 {
        let mut redis = Redis::start();
        let pid = redis.pid();
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 {pid}");
        wait_redis_dead(&mut redis, Duration::from_secs(10), "kill -9");
        pids.push(pid);
    }
    let records = cap.stop();
    for pid in pids {
        let sig = process_event(&records, "signal", pid);
        assert_eq!(sig["comm"], "redis-server", "{sig}");
        assert_eq!(sig["redis"], true, "{sig}");
        assert_eq!(sig["signal"]["number"], 9, "{sig}");
        assert_eq!(sig["signal"]["sender"]["pid"], std::process::id(), "{sig}");
        let exit = process_event(&records, "exit", pid);
        assert_eq!(exit["comm"], "redis-server", "{exit}");
        assert_eq!(exit["redis"], true, "{exit}");
    }
}
