//! Many idle client connections held open by a child process of their own: a storm's
//! clients (one process may hold only so many files, 20,000 on this machine kind, so a
//! storm of 45,000 takes several). perl (always on Debian) opens them and waits; the
//! child is killed and reaped on drop, which closes every connection it held.
use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Opens `$n` connections to 127.0.0.1:`$port`, says "ready N", holds them until its
/// stdin closes. A connect that fails after the listen backlog filled is retried.
const SCRIPT: &str = r#"
use strict; use IO::Socket::INET;
my ($port, $n) = @ARGV; my @s; $| = 1;
for my $i (1 .. $n) {
    my $c;
    for my $try (1 .. 50) {
        $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
        last if $c;
        select(undef, undef, undef, 0.02);
    }
    die "connection $i to port $port: $!\n" unless $c;
    push @s, $c;
}
print "ready " . scalar(@s) . "\n";
while (<STDIN>) {}
"#;

/// A child process holding idle connections to one port.
pub struct Holder {
    child: Child,
    _stdin: ChildStdin,
    pub pid: u32,
}

impl Holder {
    /// Opens `n` connections to 127.0.0.1:`port` and waits (up to `limit`) until all are
    /// established.
    pub fn open(port: u16, n: usize, limit: Duration) -> Result<Holder> {
        let mut child = Command::new("perl")
            .args(["-e", SCRIPT, &port.to_string(), &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting perl to hold client connections")?;
        let stdin = child.stdin.take().context("perl's stdin")?;
        let stdout = child.stdout.take().context("perl's stdout")?;
        let pid = child.id();
        let mut holder = Holder {
            child,
            _stdin: stdin,
            pid,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let started = Instant::now();
        match rx.recv_timeout(limit) {
            Ok(line) if line.trim() == format!("ready {n}") => Ok(holder),
            Ok(line) => {
                holder.kill();
                bail!("the connection holder said {line:?} instead of \"ready {n}\"")
            }
            Err(_) => {
                holder.kill();
                bail!(
                    "{n} connections to port {port} were not open after {:?}",
                    started.elapsed()
                )
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
    }
}
