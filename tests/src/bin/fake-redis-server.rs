//! A hostile "redis-server" for the security scenario tests: what any local user could
//! start on a free port. It exports `freeClient` and `freeClientAsync` (so redis-trace
//! takes it for a Redis worth probing), speaks just enough RESP for redis-trace's
//! read-only session, records every byte it receives, and answers with whatever the test
//! asks (a FIFO or a symlink as its logfile, control characters in its version).
//!
//! fake-redis-server --port N --record FILE [--logfile PATH] [--version-text TEXT]
//!                   [--require-password]
//!
//! Run in any other way (as `redis-server --version` would be), it writes the file
//! `<its own path>.executed` and exits: a test that finds that file has caught
//! redis-trace executing a traced program. Exits by itself after 120 s.
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exported like Redis's own (the tests' build links this binary with -rdynamic).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn freeClient(c: *mut u8) -> usize {
    std::hint::black_box(c) as usize
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn freeClientAsync(c: *mut u8) -> usize {
    std::hint::black_box(c) as usize ^ 1
}

struct Settings {
    record: PathBuf,
    logfile: String,
    version: String,
    require_password: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(port), Some(record)) = (get("--port"), get("--record")) else {
        // Executed by someone other than the test: leave the evidence.
        if let Ok(me) = std::env::current_exe() {
            let mut marker = me.into_os_string();
            marker.push(".executed");
            let _ = std::fs::write(marker, format!("{args:?}\n"));
        }
        println!("Redis server v=7.0.15 sha=00000000:0 malloc=libc bits=64 build=0");
        return ExitCode::SUCCESS;
    };
    // Keep the exports in the binary.
    std::hint::black_box((
        freeClient as *const () as usize,
        freeClientAsync as *const () as usize,
    ));
    let settings = Arc::new(Settings {
        record: PathBuf::from(record),
        logfile: get("--logfile").unwrap_or_default(),
        version: get("--version-text").unwrap_or_else(|| "7.0.15".into()),
        require_password: args.iter().any(|a| a == "--require-password"),
    });
    let Ok(listener) = TcpListener::bind(("127.0.0.1", port.parse().unwrap_or(0))) else {
        eprintln!("fake-redis-server: cannot listen on {port}");
        return ExitCode::FAILURE;
    };
    let _ = listener.set_nonblocking(true);
    let lock = Arc::new(Mutex::new(()));
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        match listener.accept() {
            Ok((s, _)) => {
                let (settings, lock) = (settings.clone(), lock.clone());
                std::thread::spawn(move || serve(s, &settings, &lock));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    ExitCode::SUCCESS
}

fn serve(mut s: TcpStream, settings: &Settings, lock: &Mutex<()>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut authed = !settings.require_password;
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let _held = lock.lock();
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&settings.record)
            {
                let _ = f.write_all(&chunk[..n]);
            }
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some((cmd, used)) = parse_command(&buf) {
            buf.drain(..used);
            let reply = answer(&cmd, settings, &mut authed);
            if s.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

/// One RESP array of bulk strings from the front of `buf`, and how many bytes it took.
fn parse_command(buf: &[u8]) -> Option<(Vec<String>, usize)> {
    let line = |at: usize| -> Option<(&[u8], usize)> {
        let rel = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[at..at + rel], at + rel + 2))
    };
    let (head, mut at) = line(0)?;
    let n: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, next) = line(at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        let data = buf.get(next..next + len)?;
        out.push(String::from_utf8_lossy(data).into_owned());
        at = next + len + 2;
        if buf.len() < at {
            return None;
        }
    }
    Some((out, at))
}

fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}

fn answer(cmd: &[String], settings: &Settings, authed: &mut bool) -> Vec<u8> {
    let name = cmd
        .first()
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or_default();
    if name == "AUTH" {
        *authed = true;
        return b"+OK\r\n".to_vec();
    }
    if !*authed {
        return b"-NOAUTH Authentication required.\r\n".to_vec();
    }
    match name.as_str() {
        "PING" => b"+PONG\r\n".to_vec(),
        "INFO" => bulk(&format!(
            "# Server\r\nredis_version:{}\r\nprocess_id:{}\r\nrun_id:fake\r\nuptime_in_seconds:10\r\n\
             # Clients\r\nconnected_clients:1\r\n",
            settings.version,
            std::process::id()
        )),
        "CONFIG" => {
            let param = cmd
                .get(2)
                .map(|p| p.to_ascii_lowercase())
                .unwrap_or_default();
            match param.as_str() {
                "logfile" => {
                    let mut r = b"*2\r\n".to_vec();
                    r.extend(bulk("logfile"));
                    r.extend(bulk(&settings.logfile));
                    r
                }
                "timeout" => {
                    let mut r = b"*2\r\n".to_vec();
                    r.extend(bulk("timeout"));
                    r.extend(bulk("0"));
                    r
                }
                _ => b"*0\r\n".to_vec(),
            }
        }
        "CLIENT" => bulk(""),
        _ => b"-ERR unknown command\r\n".to_vec(),
    }
}
