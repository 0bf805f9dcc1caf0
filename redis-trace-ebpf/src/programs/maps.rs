//! Every map and global of the programs, and the small accessors that several programs
//! share (counters, Redis probe settings, ring-buffer wakeup). The loader finds them by
//! name (`PORT_BITS`, `EVENTS`, ...; see `redis-trace/src/kernel/load.rs`).

use aya_ebpf::{
    Global,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use redis_trace_ebpf::{
    Config, ConnKey, ConnState, FlowKey, MAX_CONNS, MAX_FLOWS, MAX_OWN_SOCKS, MAX_PORTS,
    MAX_PROC_NAMES, MAX_SCOPED_NETNS, MAX_WATCHED_PIDS, PORT_BIT_WORDS, PeerPackets, RING_BYTES,
    counter, redis_probes,
};

use super::read::RECORD_BYTES;

/// Layouts and settings, overridden by the loader (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
pub(super) static CONFIG: Global<Config> = Global::new(Config::EMPTY);

/// The traced ports (host order), as a bitmap (bit `port % 32` of word `port / 32`):
/// every program runs for every connection or packet of the host, and an array lookup
/// is a plain load the verifier inlines, where a hash lookup was a helper call and a
/// hash (two of them per state change on other ports, most of that path's cost).
#[map]
pub(super) static PORT_BITS: Array<u32> = Array::with_max_entries(PORT_BIT_WORDS, 0);

/// Whether `port` is traced.
#[inline(always)]
pub(super) fn port_traced(port: u32) -> bool {
    PORT_BITS
        .get(port >> 5)
        .is_some_and(|w| w & (1 << (port & 31)) != 0)
}

/// What arrived at each end of the traced connections that leave this host's loopback
/// (see [`PeerPackets`]); keyed by addresses and the receiving end.
#[map]
pub(super) static FLOWS: LruHashMap<FlowKey, PeerPackets> =
    LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// Network namespaces a scoped capture traces (`--pid`, `--netns`, `--container`) -> 1.
#[map]
pub(super) static NETNS_SCOPE: HashMap<u32, u8> = HashMap::with_max_entries(MAX_SCOPED_NETNS, 0);

/// Process names (comm, NUL-padded) whose OOM kill, fatal signals and exit are reported.
#[map]
pub(super) static PROC_NAMES: Array<[u8; 16]> = Array::with_max_entries(MAX_PROC_NAMES, 0);

/// Processes to watch -> their name: Redis servers found by their listening port at
/// start (whatever their name), and those whose main thread exits with a watched name.
#[map]
pub(super) static WATCHED_PIDS: HashMap<u32, [u8; 16]> =
    HashMap::with_max_entries(MAX_WATCHED_PIDS, 0);

/// Sockets redis-trace's own process connected (its Redis poller), while they live:
/// their connections are left out of the output.
#[map]
pub(super) static OWN_SOCKS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_OWN_SOCKS, 0);

/// Settings of the Redis uprobes, indexed by `redis_trace_ebpf::redis_probes`.
#[map]
pub(super) static REDIS_PROBES: Array<u32> = Array::with_max_entries(redis_probes::LEN, 0);

#[inline(always)]
pub(super) fn redis_probe_setting(index: u32) -> u32 {
    REDIS_PROBES.get(index).copied().unwrap_or(0)
}

/// Redis processes whose `struct client` layout is known -> the offset of its flags
/// word (versions differ: 8 in Redis, 272 in Valkey 8.1, 328 in Valkey 9).
#[map]
pub(super) static REDIS_FLAGS_OFFSET: HashMap<u32, u32> =
    HashMap::with_max_entries(MAX_WATCHED_PIDS, 0);

/// Redis's deferred frees (`freeClientAsync`): [process, client pointer] -> who decided,
/// and the client's flags then. Consumed by the `freeClient` that follows, maybe much
/// later. Keyed by the process too: two Redis servers can hold a client at one address.
#[map]
pub(super) static ASYNC_FREES: LruHashMap<[u64; 2], Decision> =
    LruHashMap::with_max_entries(8192, 0);

/// What each Redis thread is freeing right now (`freeClient`): consumed by the state
/// change of the socket it closes, microseconds later in the same thread.
#[map]
pub(super) static FREEING: LruHashMap<u32, Freeing> = LruHashMap::with_max_entries(1024, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Decision {
    pub(super) decided_in: u64,
    pub(super) decided_in_caller: u64,
    pub(super) flags: u64,
    pub(super) ts: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Freeing {
    pub(super) ts: u64,
    /// The client being freed (one free can fire two probes: an LTO stub and the
    /// function it jumps to).
    pub(super) client: u64,
    pub(super) freed_from: u64,
    pub(super) freed_from_caller: u64,
    pub(super) decided_in: u64,
    pub(super) decided_in_caller: u64,
    pub(super) flags: u64,
}

/// Which ends of each address tuple were seen established, whatever their namespace
/// (key with `netns` 0): the two ends of a connection between two namespaces of this
/// host have two `CONNS` entries, and this says each that the other exists.
#[map]
pub(super) static TUPLES: LruHashMap<ConnKey, u32> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// Open connections on traced ports.
#[map]
pub(super) static CONNS: LruHashMap<ConnKey, ConnState> =
    LruHashMap::with_max_entries(MAX_CONNS, 0);

#[map]
pub(super) static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Per-CPU counters, indexed by `redis_trace_ebpf::counter`.
#[map]
pub(super) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

const BPF_RB_AVAIL_DATA: u64 = 0;

#[inline(always)]
pub(super) fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; no other program touches it concurrently on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Ring-buffer flags: no wakeup unless enough data waits (userspace polls on a timer).
#[inline(always)]
pub(super) fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= config!(wakeup_bytes) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Per-CPU scratch space for the copy of the current record.
#[map]
pub(super) static SCRATCH: PerCpuArray<[u8; RECORD_BYTES]> = PerCpuArray::with_max_entries(1, 0);

// Keep the map sizes tied to the shared constants.
const _: () = assert!(MAX_CONNS > 0 && MAX_PORTS > 0);
