//! Reading the log file: opened safely (the path comes from Redis), and followed during
//! a capture across truncation and rotation, on a thread of its own.
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::LogEvent;
use super::parse::{Context, parse_line};

/// Opens the Redis log at `path` for reading, safely: the path comes from Redis (`CONFIG
/// GET logfile`), which a hostile or compromised server controls. A symlink as the last
/// component is refused (`O_NOFOLLOW`: no reading /etc/shadow through a planted link), the
/// open never blocks (`O_NONBLOCK`: a FIFO would hang the capture), and anything but a
/// regular file is refused before a byte is read.
pub fn open_regular_file(path: &Path) -> anyhow::Result<(File, std::fs::Metadata)> {
    open_checked(&LogLocation::plain(path))
}

/// Where a log is: a plain path, or a path inside a directory that the walk may not
/// leave (a containerised server's root, or its working directory).
#[derive(Debug, Clone)]
pub struct LogLocation {
    /// `None`: `path` is opened as is.
    dir: Option<std::sync::Arc<File>>,
    /// Relative to `dir` when there is one.
    path: PathBuf,
    /// How `path` is resolved under `dir` (`RESOLVE_IN_ROOT` or `RESOLVE_BENEATH`).
    resolve: u64,
    /// What messages call it.
    shown: PathBuf,
}

impl LogLocation {
    pub fn plain(path: &Path) -> Self {
        Self {
            dir: None,
            path: path.to_path_buf(),
            resolve: 0,
            shown: path.to_path_buf(),
        }
    }

    /// `path` (absolute, as Redis names it) inside the root directory of process `pid`:
    /// every symlink on the way resolves inside that root, as it does for the server,
    /// never to the host's files (openat2 RESOLVE_IN_ROOT).
    pub fn in_root_of(pid: u32, path: &Path) -> anyhow::Result<Self> {
        Self::under(format!("/proc/{pid}/root"), path, libc::RESOLVE_IN_ROOT)
    }

    /// `path` (relative, as Redis names it) under the working directory of process
    /// `pid`, never leaving it (RESOLVE_BENEATH).
    pub fn in_cwd_of(pid: u32, path: &Path) -> anyhow::Result<Self> {
        Self::under(format!("/proc/{pid}/cwd"), path, libc::RESOLVE_BENEATH)
    }

    fn under(dir: String, path: &Path, resolve: u64) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .with_context(|| format!("opening {dir}"))?;
        let rel: PathBuf = path
            .components()
            .filter(|c| !matches!(c, std::path::Component::RootDir))
            .collect();
        Ok(Self {
            dir: Some(std::sync::Arc::new(handle)),
            shown: Path::new(&dir).join(&rel),
            path: rel,
            resolve: resolve | libc::RESOLVE_NO_MAGICLINKS,
        })
    }

    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Opens it with `flags`, `O_NOFOLLOW | O_CLOEXEC` always added.
    fn open_with(&self, flags: i32) -> std::io::Result<File> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        use std::os::unix::fs::OpenOptionsExt as _;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let Some(dir) = &self.dir else {
            return std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(&self.path);
        };
        let c = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes())
            .map_err(std::io::Error::other)?;
        // SAFETY: open_how is plain data; all-zero is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.resolve = self.resolve;
        // SAFETY: a valid directory fd, a NUL-terminated path and an open_how of the size
        // passed; the returned fd, when not negative, is ours to own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
    }

    /// The file's identity now (without following a last symlink), for rotation.
    fn identity(&self) -> Option<(u64, u64)> {
        let f = self.open_with(libc::O_PATH).ok()?;
        let m = f.metadata().ok()?;
        Some((m.dev(), m.ino()))
    }
}

fn open_checked(at: &LogLocation) -> anyhow::Result<(File, std::fs::Metadata)> {
    let path = at.shown();
    let file = at
        .open_with(libc::O_RDONLY | libc::O_NONBLOCK)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                anyhow::anyhow!(
                    "the Redis log {} is a symbolic link: not followed (name the file itself in \
                     Redis's logfile)",
                    path.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("opening the Redis log {}", path.display()))
            }
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("stat of the Redis log {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!(
            "the Redis log {} is not a regular file: not read",
            path.display()
        );
    }
    Ok((file, meta))
}

/// Follows a Redis log file: what is appended after [`LogTail::open`], across truncation
/// and rotation.
pub struct LogTail {
    at: LogLocation,
    file: File,
    dev: u64,
    ino: u64,
    /// Offset in `file` up to which we have read.
    pos: u64,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
    /// Drop bytes up to the next newline: we started mid-line, or the line was too long.
    skipping: bool,
    ctx: Context,
}

/// A [`LogTail`] read on a thread of its own, so that a slow file system (a hung NFS
/// mount) can delay the log lines but never the capture's loop. The thread stops when
/// this is dropped.
pub struct LogFollower {
    rx: std::sync::mpsc::Receiver<Vec<LogEvent>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How often the follower thread looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(20);

impl LogFollower {
    pub fn start(mut tail: LogTail) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("redis-log".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    let events = tail.poll();
                    // A full channel waits for the reader; a gone one ends the thread.
                    if !events.is_empty() && tx.send(events).is_err() {
                        return;
                    }
                    std::thread::sleep(FOLLOW_EVERY);
                }
            })
            .context("starting the Redis log reader thread")?;
        Ok(Self { rx, stop })
    }

    /// The lines read since the last call, without waiting.
    pub fn poll(&mut self) -> Vec<LogEvent> {
        let mut out = Vec::new();
        while let Ok(events) = self.rx.try_recv() {
            out.extend(events);
        }
        out
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// At most this much is read per [`LogTail::poll`]; the rest waits for the next call.
const MAX_READ_PER_POLL: u64 = 4 * 1024 * 1024;
/// A line longer than this (only raw dumps are) is dropped rather than buffered.
const MAX_LINE: usize = 1024 * 1024;

impl LogTail {
    /// Opens the log and positions at its current end (we only want what happens during
    /// the capture).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::open_at(LogLocation::plain(path))
    }

    /// [`LogTail::open`] for a log somewhere a walk may not leave (see [`LogLocation`]).
    pub fn open_at(at: LogLocation) -> anyhow::Result<Self> {
        let (file, meta) = open_checked(&at)?;
        let pos = meta.len();
        let skipping = pos > 0 && !byte_before_is_newline(&file, pos);
        Ok(Self {
            at,
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            pos,
            partial: Vec::new(),
            skipping,
            ctx: Context::default(),
        })
    }

    /// Lines appended since the last call, parsed. A file that shrank (truncated) is read
    /// again from its start; when the path names another file (rotated: renamed away and
    /// recreated), what is left in the old one is read first, then the new one from its
    /// start. Bounded: reads at most 4 MiB per call.
    pub fn poll(&mut self) -> Vec<LogEvent> {
        let mut out = Vec::new();
        let mut budget = MAX_READ_PER_POLL;
        // Finish the file we hold (also when the path is gone or renamed).
        self.read_available(&mut budget, &mut out);
        if budget == 0 {
            return out;
        }
        let rotated = match self.at.identity() {
            Some((dev, ino)) => dev != self.dev || ino != self.ino,
            // Renamed and not recreated yet: keep the old file, look again next time.
            None => false,
        };
        if rotated {
            // The new file gets the same checks as the first (a symlink or FIFO put in
            // its place is not followed).
            if let Ok((file, meta)) = open_checked(&self.at) {
                {
                    // A last line without its newline in the old file: take it as complete.
                    self.end_line(&[], &mut out);
                    self.file = file;
                    self.dev = meta.dev();
                    self.ino = meta.ino();
                    self.pos = 0;
                    self.partial.clear();
                    self.skipping = false;
                    self.read_available(&mut budget, &mut out);
                }
            }
        }
        out
    }

    pub fn path(&self) -> &Path {
        self.at.shown()
    }

    /// Reads what `self.file` holds past `self.pos`, within `budget`.
    fn read_available(&mut self, budget: &mut u64, out: &mut Vec<LogEvent>) {
        let len = match self.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return,
        };
        if len < self.pos {
            // Truncated (logrotate copytruncate, `> file`): start again from the top.
            self.pos = 0;
            self.partial.clear();
            self.skipping = false;
        }
        let want = (len - self.pos).min(*budget);
        if want == 0 {
            return;
        }
        if self.file.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        let got = match (&self.file).take(want).read_to_end(&mut buf) {
            Ok(n) => n as u64,
            Err(_) => return,
        };
        self.pos += got;
        *budget = budget.saturating_sub(got);
        self.feed(&buf, out);
    }

    fn feed(&mut self, bytes: &[u8], out: &mut Vec<LogEvent>) {
        let mut segments = bytes.split(|b| *b == b'\n').peekable();
        while let Some(seg) = segments.next() {
            if segments.peek().is_some() {
                self.end_line(seg, out);
            } else if !self.skipping {
                // The unterminated rest: keep it for the next call.
                self.partial.extend_from_slice(seg);
                if self.partial.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                }
            }
        }
    }

    /// `seg` ends the current line (the newline was seen, or the file was left behind).
    fn end_line(&mut self, seg: &[u8], out: &mut Vec<LogEvent>) {
        if self.skipping {
            self.skipping = false;
            self.partial.clear();
            return;
        }
        let ev = if self.partial.is_empty() {
            parse_line(&String::from_utf8_lossy(seg))
        } else {
            self.partial.extend_from_slice(seg);
            let ev = parse_line(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
            ev
        };
        if let Some(mut ev) = ev {
            self.ctx.apply(&mut ev);
            out.push(ev);
        }
    }
}

fn byte_before_is_newline(mut file: &File, pos: u64) -> bool {
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(pos - 1)).is_ok() && file.read_exact(&mut b).is_ok() && b[0] == b'\n'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::redis_log::LogKind;
    use std::io::Write as _;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "redis-trace-redis-log-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(text.as_bytes()).expect("append");
    }

    fn obl_line(port: u16) -> String {
        format!(
            "1:M 25 Nov 2026 16:38:04.676 # Client id=5 addr=127.0.0.1:{port} laddr=127.0.0.1:6379 fd=8 name= age=3 idle=0 flags=P db=0 omem=82016 cmd=subscribe scheduled to be closed ASAP for overcoming of output buffer limits.\n"
        )
    }

    fn ports(evs: &[LogEvent]) -> Vec<u16> {
        evs.iter()
            .filter_map(|e| e.client_addr.map(|a| a.port()))
            .collect()
    }

    #[test]
    fn redis_log_tail_append_partial_truncate() {
        let dir = Scratch::new("append");
        let path = dir.0.join("redis.log");
        // Old content, ending mid-line: none of it is reported.
        append(&path, &obl_line(1000));
        append(
            &path,
            "1:M 25 Nov 2026 16:38:04.676 # Client id=5 addr=127.0.0.1:1001",
        );
        let mut tail = LogTail::open(&path).expect("open");
        assert_eq!(tail.path(), path.as_path());
        assert!(tail.poll().is_empty());
        append(
            &path,
            " scheduled to be closed ASAP for overcoming of output buffer limits.\n",
        );
        assert!(
            tail.poll().is_empty(),
            "the rest of a line from before open"
        );

        append(&path, &obl_line(1002));
        append(&path, "1:M 25 Nov 2026 16:38:05.000 * noise\n");
        assert_eq!(ports(&tail.poll()), vec![1002]);
        assert!(tail.poll().is_empty());

        // A line written in two pieces.
        let line = obl_line(1003);
        let (a, b) = line.split_at(40);
        append(&path, a);
        assert!(tail.poll().is_empty());
        append(&path, b);
        assert_eq!(ports(&tail.poll()), vec![1003]);

        // Truncated, then written again (shorter than before).
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        assert!(tail.poll().is_empty());
        append(&path, &obl_line(1004));
        assert_eq!(ports(&tail.poll()), vec![1004]);
    }

    #[test]
    fn redis_log_tail_rotation() {
        let dir = Scratch::new("rotate");
        let path = dir.0.join("redis.log");
        let old = dir.0.join("redis.log.1");
        append(
            &path,
            "1:M 25 Nov 2026 16:38:04.000 * Ready to accept connections\n",
        );
        let mut tail = LogTail::open(&path).expect("open");
        append(&path, &obl_line(2000));
        std::fs::rename(&path, &old).expect("rename");
        // Written to the old file after the rename (a writer that still had it open).
        append(&old, &obl_line(2001));
        // Not recreated yet: the old file is still followed.
        assert_eq!(ports(&tail.poll()), vec![2000, 2001]);
        append(&old, &obl_line(2002));
        append(&path, &obl_line(2003));
        append(
            &path,
            "1:signal-handler (1795625225) Received SIGTERM scheduling shutdown...\n",
        );
        append(
            &path,
            "1:M 25 Nov 2026 16:47:05.672 # User requested shutdown...\n",
        );
        let evs = tail.poll();
        assert_eq!(ports(&evs), vec![2002, 2003]);
        let kinds: Vec<LogKind> = evs.iter().map(|e| e.kind.clone()).collect();
        let term = LogKind::ShutdownRequested {
            by: "SIGTERM".into(),
        };
        assert_eq!(kinds[2..], [term.clone(), term]);
        // The old file is left behind for good.
        append(&old, &obl_line(2004));
        append(&path, &obl_line(2005));
        assert_eq!(ports(&tail.poll()), vec![2005]);
        // Removed altogether: nothing, no error.
        std::fs::remove_file(&path).expect("remove");
        assert!(tail.poll().is_empty());
        append(&path, &obl_line(2006));
        assert_eq!(ports(&tail.poll()), vec![2006]);
    }

    #[test]
    fn redis_log_tail_is_bounded() {
        let dir = Scratch::new("bounded");
        let path = dir.0.join("redis.log");
        append(&path, "");
        let mut tail = LogTail::open(&path).expect("open");
        // 6 MiB of noise lines, then one of ours, then an overlong line and one more.
        let noise = "1:M 25 Nov 2026 16:38:04.000 * noise noise noise noise noise noise\n";
        let mut big = String::with_capacity(6 << 20);
        while big.len() < 6 << 20 {
            big.push_str(noise);
        }
        append(&path, &big);
        append(&path, &obl_line(3000));
        append(&path, &"x".repeat(MAX_LINE + 10));
        append(&path, &format!("{}\n", obl_line(3001).trim_end()));
        append(&path, &obl_line(3002));
        let mut seen = Vec::new();
        let mut polls = 0;
        for _ in 0..10 {
            let evs = tail.poll();
            polls += 1;
            seen.extend(ports(&evs));
            if seen.len() >= 2 {
                break;
            }
        }
        // The overlong line swallows the one it runs into; the next is read.
        assert_eq!(seen, vec![3000, 3002]);
        assert!(polls >= 2, "6 MiB takes more than one 4 MiB poll");
        assert!(tail.poll().is_empty());
    }

    #[test]
    fn redis_log_tail_missing_file() {
        let dir = Scratch::new("missing");
        assert!(LogTail::open(&dir.0.join("nope.log")).is_err());
        assert!(LogTail::open(&dir.0).is_err(), "a directory");
    }
}
