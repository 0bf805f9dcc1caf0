//! The ring buffer, drained by a thread of its own. In a storm the kernel hands over
//! records faster than the capture loop assembles, classifies and writes them (a killed
//! Redis closes 15,000 sockets in ~40 ms: 2.4 MB of records into a 1 MB ring, of which
//! 2,400 were lost when the capture loop drained it between its other work). This
//! thread only copies records out, in batches, so the ring empties as fast as it fills
//! and the storm waits in userspace, counted in the capture's memory, not lost.
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc;

/// Records copied out of the ring at once: record `i` is `bytes[ends[i-1]..ends[i]]`.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let r = &self.bytes[start..end];
            start = end;
            r
        })
    }
}

/// A batch is sent once it holds this many records (or the ring is empty).
const BATCH_RECORDS: usize = 4096;
/// The longest the thread sleeps without being woken: the kernel wakes it only once
/// 1/8 of the ring is full, so a quiet capture still sees its records within this.
const POLL_MS: i32 = 10;

pub struct RingReader {
    rx: mpsc::UnboundedReceiver<Batch>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl RingReader {
    pub fn start(ring: RingBuf<MapData>) -> std::io::Result<RingReader> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("ring".into())
            .spawn(move || run(ring, &tx, &stopping))?;
        Ok(RingReader {
            rx,
            stop,
            handle: Some(handle),
        })
    }

    /// The next batch, waiting for it.
    pub async fn next(&mut self) -> Option<Batch> {
        self.rx.recv().await
    }

    /// Every batch already copied out, without waiting.
    pub fn try_next(&mut self) -> Option<Batch> {
        self.rx.try_recv().ok()
    }

    /// Stops the thread after it has drained the ring once more; every batch is then
    /// waiting for [`RingReader::try_next`].
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run(mut ring: RingBuf<MapData>, tx: &mpsc::UnboundedSender<Batch>, stop: &AtomicBool) {
    let fd = ring.as_raw_fd();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let mut batch = Batch::default();
        while let Some(item) = ring.next() {
            batch.push(&item);
            if batch.len() >= BATCH_RECORDS && tx.send(std::mem::take(&mut batch)).is_err() {
                return;
            }
        }
        if !batch.is_empty() && tx.send(batch).is_err() {
            return;
        }
        if stopping {
            return;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the ring's fd, which `ring` keeps open.
        unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
    }
}
