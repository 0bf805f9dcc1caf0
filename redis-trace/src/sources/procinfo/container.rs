//! Which container a process runs in, from its cgroup path (/proc/PID/cgroup).
//!
//! The path is what the runtime named the cgroup after, so it is a label, not a proof:
//! a process that may create cgroups can pick any name. It is used to name and to scope
//! (`--container`), never to decide a cause.
use serde::{Deserialize, Serialize};

/// The runtime that made the container, as its cgroup name tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A Kubernetes pod whose runtime the path does not name (the cgroupfs driver).
    Kubernetes,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Kubernetes => "kubernetes",
        }
    }
}

/// A container, as its cgroup path names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Container {
    pub runtime: Runtime,
    /// The container id (64 hex digits for Docker, containerd and CRI-O).
    pub id: String,
    /// The Kubernetes pod's uid, when the container is in a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

impl Container {
    /// The first 12 digits of the id, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// Whether `wanted` (a full id or a prefix of at least 4 characters, as an operator
    /// copies it from `docker ps` or `crictl ps`) names this container.
    pub fn matches(&self, wanted: &str) -> bool {
        let wanted = wanted.trim();
        wanted.len() >= 4 && self.id.starts_with(wanted)
    }
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.runtime.as_str(), self.short_id())?;
        if let Some(pod) = &self.pod_uid {
            write!(f, " (pod {pod})")?;
        }
        Ok(())
    }
}

/// The container of process `pid`, if its cgroup path names one.
pub fn container_of(pid: u32) -> Option<Container> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    from_cgroup_file(&text)
}

/// The container named by the text of a /proc/PID/cgroup file: cgroup v2's single
/// `0::/path` line, or any v1 hierarchy's path (they agree for containers).
pub fn from_cgroup_file(text: &str) -> Option<Container> {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .find_map(from_cgroup_path)
}

/// The container named by one cgroup path.
pub fn from_cgroup_path(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let pod_uid = parts.iter().find_map(|p| pod_uid(p));
    // The innermost component that names a container wins (a container's own
    // sub-cgroups, such as systemd's `init.scope` inside it, come after it).
    let (runtime, id) = parts
        .iter()
        .rev()
        .find_map(|p| container_id(p, pod_uid.is_some()))?;
    Some(Container {
        runtime,
        id,
        pod_uid,
    })
}

/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`, or a bare id (cgroupfs: `/docker/<id>`, `/kubepods/.../<id>`).
fn container_id(part: &str, in_pod: bool) -> Option<(Runtime, String)> {
    let name = part.strip_suffix(".scope").unwrap_or(part);
    for (prefix, runtime) in [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ] {
        if let Some(id) = name.strip_prefix(prefix)
            && is_id(id)
        {
            return Some((runtime, id.to_string()));
        }
    }
    // A bare 64-digit id: Docker's cgroupfs driver, or a pod's container (cgroupfs).
    (part == name && is_id(name)).then(|| {
        (
            if in_pod {
                Runtime::Kubernetes
            } else {
                Runtime::Docker
            },
            name.to_string(),
        )
    })
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid with _>.slice` (systemd), as the
/// uid with dashes.
fn pod_uid(part: &str) -> Option<String> {
    let name = part.strip_suffix(".slice").unwrap_or(part);
    let idx = name.rfind("pod")?;
    if idx > 0 && !name[..idx].ends_with('-') {
        return None;
    }
    let uid = name[idx + 3..].replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    ok.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    /// /proc/PID/cgroup texts as each runtime and driver writes them (the layouts of
    /// Docker, containerd, CRI-O, podman and the kubelet's cgroupfs and systemd drivers;
    /// ids replaced by one of the same shape).
    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/cgroup/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture")
    }

    #[test]
    fn docker_cgroup_v1_and_v2() {
        let v1 = from_cgroup_file(&fixture("docker-v1.txt")).expect("docker v1");
        assert_eq!(
            (v1.runtime, v1.id.as_str(), v1.pod_uid),
            (Runtime::Docker, ID, None)
        );
        let v2 = from_cgroup_file(&fixture("docker-v2-systemd.txt")).expect("docker v2");
        assert_eq!((v2.runtime, v2.id.as_str()), (Runtime::Docker, ID));
        let v2 = from_cgroup_file(&fixture("docker-v2-cgroupfs.txt")).expect("docker v2 fs");
        assert_eq!((v2.runtime, v2.id.as_str()), (Runtime::Docker, ID));
        assert_eq!(v2.short_id(), "4f1e2d3c4b5a");
        assert!(v2.matches("4f1e2d3c") && !v2.matches("4f1") && !v2.matches("5f1e2d3c"));
    }

    #[test]
    fn kubernetes_pods_of_each_qos_class_and_driver() {
        let uid = "0d9b5c1e-7a3f-4b2d-9c8e-1f2a3b4c5d6e";
        for (file, runtime) in [
            ("k8s-burstable-containerd.txt", Runtime::Containerd),
            ("k8s-besteffort-crio.txt", Runtime::CriO),
            ("k8s-guaranteed-containerd.txt", Runtime::Containerd),
            ("k8s-burstable-cgroupfs-v1.txt", Runtime::Kubernetes),
            ("k8s-besteffort-docker-v1.txt", Runtime::Docker),
        ] {
            let c = from_cgroup_file(&fixture(file)).unwrap_or_else(|| panic!("{file}"));
            assert_eq!(c.runtime, runtime, "{file}");
            assert_eq!(c.id, ID, "{file}");
            assert_eq!(c.pod_uid.as_deref(), Some(uid), "{file}");
        }
    }

    #[test]
    fn podman_and_hosts_without_containers() {
        let p = from_cgroup_file(&fixture("podman-v2.txt")).expect("podman");
        assert_eq!(p.runtime, Runtime::Podman);
        for host in [
            "host-v2-service.txt",
            "host-v1-user.txt",
            "host-v2-root.txt",
        ] {
            assert_eq!(from_cgroup_file(&fixture(host)), None, "{host}");
        }
        // Near misses: a short id, a non-hex id, a pod without a container.
        assert_eq!(from_cgroup_path("/system.slice/docker-abc.scope"), None);
        assert_eq!(
            from_cgroup_path(&format!("/docker/{}", "g".repeat(64))),
            None
        );
        assert_eq!(
            from_cgroup_path("/kubepods/burstable/pod0d9b5c1e-7a3f-4b2d-9c8e-1f2a3b4c5d6e"),
            None
        );
        assert_eq!(from_cgroup_file(""), None);
        assert_eq!(from_cgroup_file("garbage\n:::\n"), None);
    }
}
