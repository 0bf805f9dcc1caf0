//! A small real Redis client the scenario tests run as its own process, so that the
//! records can name a pid and comm ("rt-client") other than the test's.
//!
//! rt-client close ADDR        PING, read the reply, close() normally (FIN)
//! rt-client hold-unread ADDR  PING, do not read the reply, wait to be killed
//!                             (the kernel then resets: TCP_ABORT_ON_CLOSE)
//! rt-client fill ADDR MAX     SET 1 MB values until the connection breaks or MAX sent
//!
//! Prints "local <ip:port>" once connected; exits within 60 s whatever happens.
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: rt-client close|hold-unread|fill ADDR [MAX]");
        return ExitCode::from(2);
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("bad address {addr}");
        return ExitCode::from(2);
    };
    match run(mode, addr, args.get(3)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("error {} {e}", e.raw_os_error().unwrap_or(0));
            ExitCode::FAILURE
        }
    }
}

fn run(mode: &str, addr: SocketAddr, max: Option<&String>) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    println!("local {}", s.local_addr()?);
    std::io::stdout().flush()?;
    match mode {
        "close" => {
            s.write_all(b"PING\r\n")?;
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line)?;
            drop(s);
        }
        "hold-unread" => {
            s.write_all(b"PING\r\n")?;
            // Stay alive, reply unread, until killed (bounded anyway).
            std::thread::sleep(Duration::from_secs(60));
        }
        "fill" => {
            let max: usize = max.and_then(|m| m.parse().ok()).unwrap_or(500);
            let value = "x".repeat(1 << 20);
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut reader = BufReader::new(s.try_clone()?);
            for i in 0..max {
                if Instant::now() > deadline {
                    break;
                }
                let cmd = format!(
                    "*3\r\n$3\r\nSET\r\n$8\r\nk{i:07}\r\n${}\r\n{value}\r\n",
                    value.len()
                );
                s.write_all(cmd.as_bytes())?;
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                }
            }
        }
        _ => return Err(std::io::Error::other(format!("unknown mode {mode}"))),
    }
    Ok(())
}
