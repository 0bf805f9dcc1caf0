//! A Redis lab for the demo (`redis-trace demo`), the bench (`cargo xtask bench`) and the
//! scenario tests: one copy of what each of them needs to make Redis incidents happen
//! on this host.
//!
//! - [`Redis`]: a throwaway redis-server of our own ([`RedisOptions`]: binary, port,
//!   extra arguments, a wrapper command such as `ip netns exec NS`, a user, a password
//!   kept out of argv), ready once it answers PING; killed, reaped and its directory
//!   removed on drop.
//! - [`Build`]: another Redis or Valkey build (`cargo xtask builds` fetches them into
//!   target/redis-builds/, its manifest builds.json), started by
//!   [`RedisOptions::build`]: chrooted in its root, or with its `LD_LIBRARY_PATH`.
//! - [`resp`]: send one command, read one reply.
//! - [`connect`], [`wait_closed`], [`set_linger_zero`], [`free_port`], [`private_dir`]:
//!   small socket and file helpers.
//! - [`MemCgroup`]: a memory cgroup (v2, or v1 with its OOM killer enabled) to get a
//!   Redis OOM-killed; whatever is left in it is killed and the group removed on drop.
//! - [`Netns`], [`in_netns`]: network namespaces of our own, deleted on drop.
//! - [`Holder`]: many idle client connections held by a child process (a storm's).
//!
//! Every wait has a limit. Errors are `anyhow`/`io` errors that say what failed; the few
//! functions meant for tests only (`Redis::start`, `Redis::command`, `MemCgroup::create`,
//! ...) panic with a message instead, and say so.
mod build;
mod cgroup;
mod holders;
mod net;
mod netns;
pub mod resp;
mod server;

pub use build::{Build, HOST_VERSION, ServerKind};
pub use cgroup::{MEMCG_LIMIT_BYTES, MemCgroup};
pub use holders::Holder;
pub use net::{connect, free_port, private_dir, set_linger_zero, wait_closed, wait_closed_or};
pub use netns::{Netns, Topology, in_netns, run_in};
pub use server::{Redis, RedisOptions};
