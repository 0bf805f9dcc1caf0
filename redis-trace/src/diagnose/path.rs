//! What captures' packets said about the path (`--capture`), checked against this
//! Redis's `tcp-keepalive`: a device that forgets idle flows after N s needs keepalive
//! probes (or pool idle timeouts) below N.
use crate::schema::{PathKind, Record};

use super::{Finding, Severity};

/// The path findings of some captures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathBound {
    /// Connections a device had dropped, and the shortest quiet time before it did.
    pub dropped: usize,
    pub shortest_idle_s: Option<f64>,
    /// Connections whose peer stopped answering.
    pub silent: usize,
}

impl PathBound {
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut b = PathBound::default();
        for r in records {
            let Record::ConnectionClosed(c) = r else {
                continue;
            };
            let Some(p) = &c.path else { continue };
            match p.kind {
                PathKind::DeviceDroppedFlow => {
                    b.dropped += 1;
                    // From a file: only a finite, non-negative time is a bound.
                    if let Some(s) = p.idle_s.filter(|s| s.is_finite() && *s >= 0.0) {
                        b.shortest_idle_s = Some(b.shortest_idle_s.map_or(s, |m: f64| m.min(s)));
                    }
                }
                PathKind::PeerStoppedAnswering => b.silent += 1,
                PathKind::Unknown => {}
            }
        }
        b
    }
}

/// A device in the path drops idle flows: Warning when `tcp-keepalive` is off or not
/// below the bound the captures show, Info when it already is.
pub fn check_path(b: &PathBound, tcp_keepalive: Option<u64>) -> Option<Finding> {
    if b.dropped == 0 {
        return None;
    }
    let bound = b.shortest_idle_s;
    let mut evidence = vec![format!(
        "capture packets: {} connection{} answered by a RST that the peer did not send, after \
         a quiet time{}",
        b.dropped,
        if b.dropped == 1 { " was" } else { "s were" },
        bound
            .map(|s| format!(" of {s:.1} s at the shortest"))
            .unwrap_or_default()
    )];
    let below = match (tcp_keepalive, bound) {
        (Some(k), Some(s)) if k > 0 && (k as f64) < s => true,
        (Some(k), _) => {
            evidence.push(format!("CONFIG GET tcp-keepalive: {k}"));
            false
        }
        (None, _) => false,
    };
    let target = bound.map_or(60, |s| ((s / 2.0).floor() as u64).max(1));
    if below {
        evidence.push(format!(
            "CONFIG GET tcp-keepalive: {} (below the device's idle timeout: its probes keep \
             idle connections known to it from now on)",
            tcp_keepalive.unwrap_or(0)
        ));
        return Some(Finding::new(
            Severity::Info,
            "a device in the path drops idle flows; tcp-keepalive is already below its timeout",
            evidence,
            "Keep client pools' idle timeouts below that bound too, and TCP keepalive on the \
             clients.",
        ));
    }
    Some(Finding::new(
        Severity::Warning,
        format!(
            "a device in the path drops idle flows{}",
            bound
                .map(|s| format!(" after at most {s:.1} s"))
                .unwrap_or_default()
        ),
        evidence,
        format!(
            "Keep idle connections from reaching that timeout: CONFIG SET tcp-keepalive {target} \
             (and in redis.conf), TCP keepalive on the clients, and pool idle timeouts below it; \
             or raise the device's idle timeout (conntrack: \
             nf_conntrack_tcp_timeout_established; cloud load balancers: their idle timeout)."
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ConnectionClosed, PathFinding};

    fn closed(kind: PathKind, idle_s: Option<f64>) -> Record {
        Record::ConnectionClosed(Box::new(ConnectionClosed {
            path: Some(PathFinding {
                kind,
                idle_s,
                finding: String::new(),
            }),
            ..ConnectionClosed::default()
        }))
    }

    #[test]
    fn the_shortest_bound_decides_the_keepalive() {
        let recs = [
            closed(PathKind::DeviceDroppedFlow, Some(4.1)),
            closed(PathKind::DeviceDroppedFlow, Some(350.0)),
            closed(PathKind::DeviceDroppedFlow, Some(f64::NAN)),
            closed(PathKind::PeerStoppedAnswering, Some(5.0)),
            Record::ConnectionClosed(Box::default()),
        ];
        let b = PathBound::from_records(&recs);
        assert_eq!(b.dropped, 3);
        assert_eq!(b.silent, 1);
        assert_eq!(b.shortest_idle_s, Some(4.1));
        // Redis's default keepalive (300 s) is above a 4 s NAT timeout.
        let f = check_path(&b, Some(300)).expect("finding");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(
            f.title,
            "a device in the path drops idle flows after at most 4.1 s"
        );
        assert!(f.fix.contains("CONFIG SET tcp-keepalive 2"), "{}", f.fix);
        assert!(
            f.evidence
                .iter()
                .any(|e| e == "CONFIG GET tcp-keepalive: 300")
        );
        // Already below it: said, not warned.
        assert_eq!(
            check_path(&b, Some(2)).map(|f| f.severity),
            Some(Severity::Info)
        );
        // Off is never below.
        assert_eq!(
            check_path(&b, Some(0)).map(|f| f.severity),
            Some(Severity::Warning)
        );
        // Nothing dropped: nothing to say.
        assert_eq!(check_path(&PathBound::default(), Some(300)), None);
    }
}
