//! `--redact`: client addresses, client names and client process names become stable
//! pseudonyms (`host-3:51234`, `client-2`, `proc-1`), in the fields and inside every text
//! that quotes them (evidence, Redis log lines, the killer, notes, warnings, findings).
//! What identifies the Redis server (its address, pid, process name, host) stays.
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::model::{CapInfo, Model, ProcRef, Rec};
use crate::diagnose::finding::Finding;

pub(super) struct Redactor {
    server_addrs: HashSet<(IpAddr, u16)>,
    server_ips: HashSet<IpAddr>,
    server_ports: HashSet<u16>,
    server_comms: HashSet<String>,
    hosts: HashMap<IpAddr, String>,
    names: HashMap<String, String>,
    comms: HashMap<String, String>,
    /// Names and process names that are not one word (see [`is_word`]): replaced one by
    /// one; one-word ones are looked up per word of the text.
    odd: Vec<(String, String)>,
    /// Names holding whitespace: `name=` values that run past a space.
    spaced: Vec<String>,
    cap_hosts: HashMap<String, String>,
}

fn parse_addr(s: &str) -> Option<(IpAddr, u16)> {
    let a: SocketAddr = s.parse().ok()?;
    let ip = match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    Some((ip, a.port()))
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_'
}

/// Replaces whole-token occurrences of each `from` (longest first): not inside a longer
/// word, so a name `redis` leaves `redis-server` alone.
fn replace_tokens(s: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = s.to_string();
    for (from, to) in pairs {
        if from.is_empty() || !out.contains(from) {
            continue;
        }
        let need_left = from.chars().next().is_some_and(is_word);
        let need_right = from.chars().next_back().is_some_and(is_word);
        let mut res = String::with_capacity(out.len());
        let mut rest = out.as_str();
        let mut prev: Option<char> = None;
        while let Some(i) = rest.find(from) {
            let before = rest[..i]
                .chars()
                .next_back()
                .or(if i == 0 { prev } else { None });
            let after = rest[i + from.len()..].chars().next();
            let ok = (!need_left || !before.is_some_and(is_word))
                && (!need_right || !after.is_some_and(is_word));
            if ok {
                res.push_str(&rest[..i]);
                res.push_str(to);
                prev = to.chars().next_back();
                rest = &rest[i + from.len()..];
            } else {
                // Step over one character of the match and look again.
                let step = rest[i..].chars().next().map_or(1, char::len_utf8);
                res.push_str(&rest[..i + step]);
                prev = rest[..i + step].chars().next_back();
                rest = &rest[i + step..];
            }
        }
        res.push_str(rest);
        out = res;
    }
    out
}

fn sorted_pairs(m: &HashMap<String, String>) -> Vec<(&str, &str)> {
    let mut v: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
    v
}

/// Replaces each whole word (a maximal run of [`is_word`] characters) found in `maps`.
fn replace_words(s: &str, maps: &[&HashMap<String, String>]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word_start: Option<usize> = None;
    let flush = |out: &mut String, w: &str| match maps.iter().find_map(|m| m.get(w)) {
        Some(p) => out.push_str(p),
        None => out.push_str(w),
    };
    for (i, c) in s.char_indices() {
        if is_word(c) {
            word_start.get_or_insert(i);
            continue;
        }
        if let Some(st) = word_start.take() {
            flush(&mut out, &s[st..i]);
        }
        out.push(c);
    }
    if let Some(st) = word_start {
        flush(&mut out, &s[st..]);
    }
    out
}

fn one_word(s: &str) -> bool {
    s.chars().all(is_word)
}

impl Redactor {
    pub fn new(m: &Model) -> Self {
        let mut r = Self {
            server_addrs: HashSet::new(),
            server_ips: HashSet::new(),
            server_ports: HashSet::new(),
            server_comms: HashSet::new(),
            hosts: HashMap::new(),
            names: HashMap::new(),
            comms: HashMap::new(),
            odd: Vec::new(),
            spaced: Vec::new(),
            cap_hosts: HashMap::new(),
        };
        let recs = || {
            m.conns
                .iter()
                .flat_map(|c| std::iter::once(&c.rec).chain(&c.others))
        };
        let servers = recs()
            .map(|r| r.server.as_str())
            .chain(m.resets.iter().map(|r| r.server.as_str()));
        for s in servers {
            if let Some((ip, port)) = parse_addr(s) {
                r.server_addrs.insert((ip, port));
                r.server_ips.insert(ip);
                r.server_ports.insert(port);
            }
        }
        for c in &m.caps {
            for p in &c.ports {
                if let Ok(port) = u16::try_from(p.port) {
                    r.server_ports.insert(port);
                }
                if let Some(pr) = &p.process {
                    r.server_comms.insert(pr.comm.clone());
                }
            }
        }
        for p in m.procs.iter().filter(|p| p.redis) {
            r.server_comms.insert(p.comm.clone());
        }
        for rec in recs() {
            if rec.closed_by_side == Some(crate::schema::Side::Server)
                && let Some(c) = &rec.comm
            {
                r.server_comms.insert(c.clone());
            }
            if let Some(p) = &rec.server_process {
                r.server_comms.insert(p.comm.clone());
            }
        }
        // Pseudonyms in timeline order, so that the first client is host-1 / client-1.
        for rec in recs() {
            if let Some((ip, _)) = parse_addr(&rec.client) {
                r.host(ip);
            }
            if let Some(n) = &rec.client_name {
                r.name(n);
            }
            if rec.closer_is_client()
                && let Some(c) = &rec.comm
            {
                r.comm(c);
            }
            if let Some(p) = &rec.client_process {
                r.comm(&p.comm);
            }
        }
        for x in &m.resets {
            if let Some((ip, _)) = parse_addr(&x.client) {
                r.host(ip);
            }
            if let Some(c) = &x.comm {
                r.comm(c);
            }
        }
        for p in m.procs.iter().filter(|p| !p.redis) {
            r.comm(&p.comm);
        }
        // Names only quoted in texts (`name=...` in CLIENT LIST lines, the Redis log, the
        // killer), before any text is rewritten, so that every text knows all of them.
        for rec in recs() {
            for t in rec.evidence.iter().chain(&rec.killer) {
                r.names_in(t);
            }
        }
        let mut n = 0;
        for c in &m.caps {
            if !c.local_redis && !r.cap_hosts.contains_key(&c.host) {
                n += 1;
                r.cap_hosts
                    .insert(c.host.clone(), format!("capture-host-{n}"));
            }
        }
        r
    }

    fn host(&mut self, ip: IpAddr) -> String {
        let n = self.hosts.len() + 1;
        self.hosts
            .entry(ip)
            .or_insert_with(|| format!("host-{n}"))
            .clone()
    }

    fn name(&mut self, name: &str) -> String {
        if name.is_empty() {
            return String::new();
        }
        if let Some(p) = self.names.get(name) {
            return p.clone();
        }
        let p = format!("client-{}", self.names.len() + 1);
        self.names.insert(name.to_string(), p.clone());
        self.remember_odd(name, &p);
        if name.contains(char::is_whitespace) {
            self.spaced.push(name.to_string());
        }
        p
    }

    fn remember_odd(&mut self, from: &str, to: &str) {
        if !one_word(from) {
            self.odd.push((from.to_string(), to.to_string()));
            self.odd
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
    }

    /// A process name: a Redis server's stays, any other becomes a pseudonym.
    fn comm(&mut self, comm: &str) -> String {
        if comm.is_empty() || self.server_comms.contains(comm) {
            return comm.to_string();
        }
        if let Some(p) = self.comms.get(comm) {
            return p.clone();
        }
        let p = format!("proc-{}", self.comms.len() + 1);
        self.comms.insert(comm.to_string(), p.clone());
        self.remember_odd(comm, &p);
        p
    }

    /// A process that is not a client (a signal's sender): only a known client's name
    /// is replaced.
    fn maybe_comm(&self, comm: &str) -> String {
        self.comms
            .get(comm)
            .cloned()
            .unwrap_or_else(|| comm.to_string())
    }

    fn names_in(&mut self, t: &str) {
        let mut rest = t;
        while let Some(i) = rest.find("name=") {
            let at_word = rest[..i].chars().next_back().is_some_and(is_word);
            let after = &rest[i + 5..];
            if !at_word {
                let v: &str = after.split(char::is_whitespace).next().unwrap_or("");
                let known = self.spaced.iter().any(|k| after.starts_with(k.as_str()));
                if !v.is_empty() && !known {
                    self.name(v);
                }
            }
            rest = after;
        }
    }

    /// A client address `ip:port` → `host-N:port`.
    fn addr(&mut self, a: &str) -> String {
        match parse_addr(a) {
            Some((ip, port)) => format!("{}:{port}", self.host(ip)),
            None => self.text(a),
        }
    }

    /// Whether an address found in a text is the Redis server's own.
    fn is_server(&self, ip: IpAddr, port: Option<u16>) -> bool {
        match port {
            Some(p) => {
                self.server_addrs.contains(&(ip, p))
                    || (self.server_ips.contains(&ip) && self.server_ports.contains(&p))
            }
            None => self.server_ips.contains(&ip),
        }
    }

    fn ip_token(&mut self, ip: IpAddr, port: Option<u16>, original: &str) -> String {
        if self.is_server(ip, port) {
            return original.to_string();
        }
        match port {
            Some(p) => format!("{}:{p}", self.host(ip)),
            None => self.host(ip),
        }
    }

    /// Every IP address in a text (IPv4, `[v6]`, bare v6), with its port if any.
    fn replace_ips(&mut self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        let port_at = |j: usize| -> Option<(u16, usize)> {
            if b.get(j) != Some(&b':') {
                return None;
            }
            let digits = b[j + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 5 {
                return None;
            }
            let p: u16 = s[j + 1..j + 1 + digits].parse().ok()?;
            Some((p, j + 1 + digits))
        };
        let tok_char = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
        while i < b.len() {
            let prev_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
            if b[i] == b'['
                && let Some(close) = s[i + 1..].find(']')
                && let Ok(v6) = s[i + 1..i + 1 + close].parse::<Ipv6Addr>()
            {
                let end = i + 1 + close + 1;
                let ip = v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6));
                let (port, end) = match port_at(end) {
                    Some((p, e)) => (Some(p), e),
                    None => (None, end),
                };
                let rep = self.ip_token(ip, port, &s[i..end]);
                out.push_str(&rep);
                i = end;
                continue;
            }
            if prev_ok && tok_char(b[i]) && b[i] != b'.' {
                let mut j = i;
                while j < b.len() && tok_char(b[j]) {
                    j += 1;
                }
                // A sentence's full stop is not part of the address.
                let mut end = j;
                while end > i && b[end - 1] == b'.' {
                    end -= 1;
                }
                let tok = &s[i..end];
                let next_ok = b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric());
                if next_ok && let Some((ip, port)) = parse_ip_token(tok) {
                    let rep = self.ip_token(ip, port, tok);
                    out.push_str(&rep);
                    i = end;
                    continue;
                }
                out.push_str(&s[i..j]);
                i = j;
                continue;
            }
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
        out
    }

    /// Rewrites a free text: addresses, client names (quoted as `name=...` or by
    /// themselves), client process names, capture hosts that are not Redis hosts.
    pub fn text(&mut self, s: &str) -> String {
        let s = self.replace_ips(s);
        // `name=VALUE`: a known name (which may hold spaces) or up to the next space.
        let mut out = String::with_capacity(s.len());
        let mut rest = s.as_str();
        while let Some(i) = rest.find("name=") {
            let at_word = rest[..i].chars().next_back().is_some_and(is_word);
            out.push_str(&rest[..i + 5]);
            let after = &rest[i + 5..];
            if at_word {
                rest = after;
                continue;
            }
            let spaced = self
                .spaced
                .iter()
                .filter(|k| after.starts_with(k.as_str()))
                .max_by_key(|k| k.len());
            let v = match spaced {
                Some(k) => k.clone(),
                None => after
                    .split(char::is_whitespace)
                    .next()
                    .unwrap_or("")
                    .to_string(),
            };
            if !v.is_empty() {
                out.push_str(&self.name(&v));
            }
            rest = &after[v.len()..];
        }
        out.push_str(rest);
        // Names that are not one word first (they may hold one-word names), then the
        // words of the text, each looked up.
        let odd: Vec<(&str, &str)> = self
            .odd
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let out = replace_tokens(&out, &odd);
        let out = replace_words(&out, &[&self.names, &self.comms]);
        replace_tokens(&out, &sorted_pairs(&self.cap_hosts))
    }

    fn proc_ref(&mut self, p: &mut ProcRef) {
        p.comm = self.comm(&p.comm);
    }

    fn rec(&mut self, r: &mut Rec) {
        r.client = self.addr(&r.client);
        r.client_name = r.client_name.as_deref().map(|n| self.name(n));
        if let Some(c) = &r.comm {
            r.comm = Some(if r.closer_is_client() {
                self.comm(c)
            } else {
                self.maybe_comm(c)
            });
        }
        if let Some(p) = r.client_process.as_mut() {
            self.proc_ref(p);
        }
        r.evidence = r.evidence.iter().map(|e| self.text(e)).collect();
        r.killer = r.killer.as_deref().map(|k| self.text(k));
    }

    fn cap(&mut self, c: &mut CapInfo) {
        c.file = self.text(&c.file);
        if let Some(h) = self.cap_hosts.get(&c.host) {
            c.host = h.clone();
        }
        c.warnings = c.warnings.iter().map(|w| self.text(w)).collect();
    }

    pub fn apply(&mut self, m: &mut Model) {
        for c in &mut m.conns {
            self.rec(&mut c.rec);
            for o in &mut c.others {
                self.rec(o);
            }
            c.notes = c.notes.iter().map(|n| self.text(n)).collect();
            c.proof_line = c.proof_line.as_deref().map(|n| self.text(n));
        }
        for x in &mut m.resets {
            x.client = self.addr(&x.client);
            x.comm = x.comm.as_deref().map(|c| self.comm(c));
        }
        for p in &mut m.procs {
            if !p.redis {
                p.comm = self.comm(&p.comm);
            }
            if let Some(s) = p.signal.as_mut()
                && let Some(sender) = s.sender.as_mut()
            {
                sender.comm = self.maybe_comm(&sender.comm);
            }
            if let Some(o) = p.oom.as_mut()
                && let Some(by) = o.invoked_by.as_mut()
            {
                by.comm = self.maybe_comm(&by.comm);
            }
        }
        for s in &mut m.statuses {
            s.error = s.error.as_deref().map(|e| self.text(e));
        }
        for c in &mut m.caps {
            self.cap(c);
        }
    }

    pub fn finding(&mut self, f: Finding) -> Finding {
        Finding {
            severity: f.severity,
            title: self.text(&f.title),
            evidence: f.evidence.iter().map(|e| self.text(e)).collect(),
            fix: self.text(&f.fix),
        }
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1`, `2001:db8::1`: an address, and a port when written.
fn parse_ip_token(tok: &str) -> Option<(IpAddr, Option<u16>)> {
    if tok.contains('.') {
        if let Ok(v4) = tok.parse::<Ipv4Addr>() {
            return Some((IpAddr::V4(v4), None));
        }
        if let Some((ip, port)) = tok.rsplit_once(':')
            && let Ok(v4) = ip.parse::<Ipv4Addr>()
            && let Ok(p) = port.parse::<u16>()
        {
            return Some((IpAddr::V4(v4), Some(p)));
        }
    }
    if tok.matches(':').count() >= 2
        && let Ok(v6) = tok.parse::<Ipv6Addr>()
    {
        return Some((
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            None,
        ));
    }
    None
}
