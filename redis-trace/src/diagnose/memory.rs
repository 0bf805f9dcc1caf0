//! The memory Redis can get at most ([`MemoryBound`]) and the checks of maxmemory and
//! memory use against it.
use std::collections::HashMap;

use super::format::{bytes, pct};
use super::redis_checks::{f64_of, u64_of};
use super::{FRAG_MIN_USED, FRAG_RATIO, Finding, MEMORY_HIGH, NO_MAXMEMORY_RSS_SHARE, Severity};
use crate::sources::redis::RedisConfig;

/// The most memory Redis can get: the host's RAM or its cgroup's limit, whichever is
/// lower, with where that number comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemoryBound {
    pub bytes: u64,
    /// An evidence sentence naming the source.
    pub source: String,
}

/// maxmemory 0: Info, or Warning when RSS already is over half the memory Redis can get
/// (OOM kill risk); maxmemory above that memory: Warning; noeviction with a maxmemory:
/// Info (writes fail at the limit; connections stay open).
pub fn check_maxmemory(
    cfg: &RedisConfig,
    info: &HashMap<String, String>,
    bound: Option<&MemoryBound>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(maxmemory) = cfg.maxmemory else {
        return out;
    };
    let policy = cfg.maxmemory_policy.as_deref().unwrap_or("?");
    if maxmemory == 0 {
        let rss = u64_of(info, "used_memory_rss");
        let mut evidence = vec![format!(
            "CONFIG GET maxmemory: 0 (no limit; maxmemory-policy {policy} never applies)"
        )];
        if let Some(rss) = rss {
            evidence.push(format!(
                "INFO memory: used_memory_rss:{rss} ({})",
                bytes(rss)
            ));
        }
        let share = match (rss, bound) {
            (Some(rss), Some(b)) if b.bytes > 0 => {
                evidence.push(b.source.clone());
                Some(rss as f64 / b.bytes as f64)
            }
            _ => None,
        };
        let fix = "Set maxmemory below what the host (or Redis's cgroup) can give it, leaving \
                   room for fork copy-on-write, client buffers and fragmentation (e.g. 60-70% of \
                   it), with an eviction policy if Redis is a cache (maxmemory-policy \
                   allkeys-lru): CONFIG SET maxmemory <bytes>, and in redis.conf.";
        match share {
            Some(s) if s > NO_MAXMEMORY_RSS_SHARE => out.push(Finding::new(
                Severity::Warning,
                format!(
                    "No maxmemory, and Redis already uses {:.0}% of the memory it can get: OOM \
                     kill risk",
                    s * 100.0
                ),
                evidence,
                fix,
            )),
            _ => out.push(Finding::new(
                Severity::Info,
                "No maxmemory: Redis grows until the kernel's OOM killer stops it",
                evidence,
                fix,
            )),
        }
        return out;
    }
    if let Some(b) = bound {
        if maxmemory > b.bytes {
            out.push(Finding::new(
                Severity::Warning,
                format!(
                    "maxmemory {} is more than the {} Redis can get: the OOM killer strikes \
                     before eviction does",
                    bytes(maxmemory),
                    bytes(b.bytes)
                ),
                vec![
                    format!("CONFIG GET maxmemory: {maxmemory} ({})", bytes(maxmemory)),
                    b.source.clone(),
                ],
                "Lower maxmemory well below the memory Redis can get (leave room for fork \
                 copy-on-write, client buffers and fragmentation), or give Redis more memory.",
            ));
        }
    }
    if policy == "noeviction" {
        out.push(Finding::new(
            Severity::Info,
            format!(
                "maxmemory-policy noeviction: at maxmemory ({}) writes fail with OOM errors \
                 (connections stay open)",
                bytes(maxmemory)
            ),
            vec![format!(
                "CONFIG GET maxmemory: {maxmemory}, maxmemory-policy: noeviction"
            )],
            "Fine for a data store that must not lose keys: watch used_memory. For a cache, set \
             an eviction policy (CONFIG SET maxmemory-policy allkeys-lru).",
        ));
    }
    out
}

/// used_memory above 90% of maxmemory; fragmentation above 1.5 with more than 100 MiB used.
pub fn check_memory_usage(cfg: &RedisConfig, info: &HashMap<String, String>) -> Vec<Finding> {
    let mut out = Vec::new();
    let used = u64_of(info, "used_memory");
    let maxmemory = cfg
        .maxmemory
        .or_else(|| u64_of(info, "maxmemory"))
        .unwrap_or(0);
    if let Some(used) = used {
        if maxmemory > 0 && used as f64 > MEMORY_HIGH * maxmemory as f64 {
            let policy = cfg
                .maxmemory_policy
                .clone()
                .or_else(|| info.get("maxmemory_policy").cloned())
                .unwrap_or_else(|| "?".into());
            let effect = if policy == "noeviction" {
                "writes fail with OOM errors at the limit"
            } else {
                "Redis evicts keys to stay under it"
            };
            out.push(Finding::new(
                Severity::Warning,
                format!(
                    "used_memory at {:.0}% of maxmemory: {effect}",
                    pct(used, maxmemory)
                ),
                vec![format!(
                    "INFO memory: used_memory:{used} ({}) of maxmemory:{maxmemory} ({}), \
                     maxmemory_policy:{policy}",
                    bytes(used),
                    bytes(maxmemory)
                )],
                "Find what grew (INFO keyspace, redis-cli --bigkeys / --memkeys; client buffers: \
                 INFO memory mem_clients_normal); raise maxmemory if the host has room, or let \
                 keys expire.",
            ));
        }
    }
    if let (Some(used), Some(ratio)) = (used, f64_of(info, "mem_fragmentation_ratio")) {
        if ratio > FRAG_RATIO && used > FRAG_MIN_USED {
            let rss = u64_of(info, "used_memory_rss").unwrap_or(0);
            out.push(Finding::new(
                Severity::Warning,
                format!(
                    "Memory fragmentation {ratio:.2}: Redis holds {} of RAM for {} of data",
                    bytes(rss),
                    bytes(used)
                ),
                vec![format!(
                    "INFO memory: mem_fragmentation_ratio:{ratio}, used_memory:{used}, \
                     used_memory_rss:{rss}"
                )],
                "Enable active defragmentation (CONFIG SET activedefrag yes; jemalloc builds), \
                 or restart or fail over in a quiet moment; the RSS counts toward OOM kills.",
            ));
        }
    }
    out
}

/// maxmemory-clients set: Info (Redis evicts, that is closes, clients past it).
pub fn check_maxmemory_clients(cfg: &RedisConfig) -> Option<Finding> {
    let v = cfg.maxmemory_clients.as_deref()?.trim();
    if v.is_empty() || v == "0" || v == "0%" {
        return None;
    }
    Some(Finding::new(
        Severity::Info,
        format!(
            "maxmemory-clients {v}: Redis closes the clients using the most memory when all \
             clients together use more"
        ),
        vec![format!("CONFIG GET maxmemory-clients: {v}")],
        "Expected if set on purpose; evictions show in INFO stats evicted_clients and in the \
         log (\"Evicting client\", notice level).",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::test_support::*;
    use crate::sources::redis::parse_config;

    #[test]
    fn diagnose_memory() {
        let cfg = parse_config(&config_pairs()); // maxmemory 1gb allkeys-lru
        let gib: u64 = 1 << 30;
        let info = info_with(&[
            ("used_memory", &(gib * 95 / 100).to_string()),
            ("mem_fragmentation_ratio", "1.10"),
        ]);
        let f = check_memory_usage(&cfg, &info);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].title
                .starts_with("used_memory at 95% of maxmemory: Redis evicts keys")
        );
        let noev = config_with(&[("maxmemory-policy", "noeviction")]);
        let f = check_memory_usage(&noev, &info);
        assert!(f[0].title.contains("writes fail with OOM errors"));
        let f = check_maxmemory(&noev, &info, None);
        assert_eq!(titles(&f).len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
        assert!(f[0].title.starts_with("maxmemory-policy noeviction"));

        // Fragmentation: only with more than 100 MiB used.
        let frag = info_with(&[
            ("used_memory", "209715200"),
            ("used_memory_rss", "335544320"),
            ("mem_fragmentation_ratio", "1.60"),
        ]);
        let f = check_memory_usage(&cfg, &frag);
        assert_eq!(f.len(), 1, "{:#?}", titles(&f));
        assert!(
            f[0].title
                .starts_with("Memory fragmentation 1.60: Redis holds 320 MiB of RAM for 200 MiB")
        );
        assert!(check_memory_usage(&cfg, &info_with(&[])).is_empty());

        // No maxmemory: Info, or Warning when RSS is over half of what Redis can get.
        let none = config_with(&[("maxmemory", "0")]);
        let host = MemoryBound {
            bytes: 4 * gib,
            source: "INFO memory: total_system_memory:4294967296 (4 GiB)".into(),
        };
        let f = check_maxmemory(&none, &info_with(&[]), Some(&host));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
        assert!(f[0].title.contains("OOM killer"));
        let big = info_with(&[("used_memory_rss", &(3 * gib).to_string())]);
        let f = check_maxmemory(&none, &big, Some(&host));
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].title
                .starts_with("No maxmemory, and Redis already uses 75% of the memory it can get"),
            "{f:?}"
        );
        assert!(f[0].evidence.contains(&host.source));
        // maxmemory above the cgroup's limit.
        let cg = MemoryBound {
            bytes: 512 << 20,
            source: "/sys/fs/cgroup/redis/memory.max: 536870912".into(),
        };
        let f = check_maxmemory(&cfg, &info_with(&[]), Some(&cg));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].title
                .starts_with("maxmemory 1 GiB is more than the 512 MiB Redis can get")
        );
    }
}
