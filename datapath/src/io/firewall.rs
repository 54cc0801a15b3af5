//! The firewall rules fake TCP needs (docs/protocol.md §11.7): after the handshake the kernel's own
//! segments of a fake-TCP connection (ACKs of the fake data, window updates, keepalives, a FIN) leave with
//! TTL 1 (hop limit 1) and a rule in the `output` hook drops them, as tcpraw's iptables rules do.
//!
//! Unlike tcpraw's, every rule is this process's and goes with it:
//! - **nftables** (preferred, through `nft`): one table per process, `inet kcpd_<pid>_<start>`, holding a
//!   base chain on the output hook; it coexists with whatever else the host runs (iptables-nft or legacy
//!   iptables, firewalld), since a drop in any table drops the packet. Removing the process's rules is
//!   deleting its table.
//! - **iptables** (where `nft` is missing, or with `KCPD_FIREWALL=iptables`): rules in `filter OUTPUT`
//!   (and `ip6tables`), each tagged `-m comment --comment kcpd_<pid>_<start>`, removed one by one.
//!
//! `<pid>_<start>` names a process incarnation (`start`: its start time in clock ticks since boot, field 22
//! of `/proc/<pid>/stat`), so a later start recognises the tables and rules of a process that is gone — a
//! SIGKILL, a crash — and removes them ([`Firewall::open`]), without touching those of a live kcpd.
//!
//! A process has one [`Firewall`] ([`Firewall::get`]); each rule lives as long as its [`RuleGuard`], and
//! [`remove_all`] drops what is left on the way out.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};

/// The tool that talks to the kernel's firewall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `nft`: a table per process.
    Nft,
    /// `iptables` / `ip6tables`: tagged rules in `filter OUTPUT`.
    Iptables,
}

/// Why a rule could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// Neither tool ran.
    #[error(
        "--tcp needs nftables (`nft`) or iptables to keep the kernel's own TCP segments in (neither ran: {0}); \
         install nftables"
    )]
    NoTool(String),
    /// The tool refused for want of privileges.
    #[error("--tcp needs CAP_NET_ADMIN for its firewall rules (run as root, or grant it): `{cmd}`: {stderr}")]
    Permission {
        /// The command.
        cmd: String,
        /// What it said.
        stderr: String,
    },
    /// The tool failed otherwise.
    #[error("firewall command `{cmd}` failed: {stderr}")]
    Command {
        /// The command.
        cmd: String,
        /// What it said.
        stderr: String,
    },
}

/// What to drop: the kernel's TTL-1 segments of one listening port, or of one dialled connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Segments from port `port` of `ip` (a wildcard: every address of its family, and IPv4 too for `::`).
    Listen {
        /// The listening address.
        ip: IpAddr,
        /// The listening port.
        port: u16,
    },
    /// Segments of the connection `local` → `remote`.
    Dial {
        /// The kernel socket's local address.
        local: SocketAddr,
        /// The server.
        remote: SocketAddr,
    },
}

impl Rule {
    /// The nft expressions (one per family the rule covers).
    fn nft(&self) -> Vec<String> {
        match *self {
            Rule::Listen { ip, port } => {
                let mut v = Vec::new();
                let v4 = |saddr: Option<IpAddr>| match saddr {
                    Some(a) => format!("ip saddr {a} ip ttl 1 tcp sport {port} drop"),
                    None => format!("ip ttl 1 tcp sport {port} drop"),
                };
                match ip {
                    IpAddr::V4(a) if a.is_unspecified() => v.push(v4(None)),
                    IpAddr::V4(_) => v.push(v4(Some(ip))),
                    IpAddr::V6(a) if a.is_unspecified() => {
                        v.push(v4(None));
                        v.push(format!("ip6 hoplimit 1 tcp sport {port} drop"));
                    }
                    IpAddr::V6(a) => v.push(format!("ip6 saddr {a} ip6 hoplimit 1 tcp sport {port} drop")),
                }
                v
            }
            Rule::Dial { local, remote } => {
                let (l, r) = (local.ip(), remote.ip());
                let (lp, rp) = (local.port(), remote.port());
                vec![if l.is_ipv4() {
                    format!("ip saddr {l} ip daddr {r} ip ttl 1 tcp sport {lp} tcp dport {rp} drop")
                } else {
                    format!("ip6 saddr {l} ip6 daddr {r} ip6 hoplimit 1 tcp sport {lp} tcp dport {rp} drop")
                }]
            }
        }
    }

    /// The iptables rule specifications (after `-A OUTPUT` or `-D OUTPUT`), each with its command.
    fn iptables(&self, tag: &str) -> Vec<(&'static str, Vec<String>)> {
        let spec = |v6: bool, head: Vec<String>| {
            let mut a = head;
            let ttl = if v6 { ["-m", "hl", "--hl-eq", "1"] } else { ["-m", "ttl", "--ttl-eq", "1"] };
            a.extend(ttl.map(String::from));
            a.extend(["-m", "comment", "--comment", tag, "-j", "DROP"].map(String::from));
            (if v6 { "ip6tables" } else { "iptables" }, a)
        };
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match *self {
            Rule::Listen { ip, port } => {
                let p = port.to_string();
                let head = |src: Option<IpAddr>| match src {
                    Some(a) => strs(&["-p", "tcp", "-s", &a.to_string(), "--sport", &p]),
                    None => strs(&["-p", "tcp", "--sport", &p]),
                };
                match ip {
                    IpAddr::V4(a) if a.is_unspecified() => vec![spec(false, head(None))],
                    IpAddr::V4(_) => vec![spec(false, head(Some(ip)))],
                    IpAddr::V6(a) if a.is_unspecified() => vec![spec(false, head(None)), spec(true, head(None))],
                    IpAddr::V6(_) => vec![spec(true, head(Some(ip)))],
                }
            }
            Rule::Dial { local, remote } => {
                let (l, r) = (local.ip().to_string(), remote.ip().to_string());
                let (lp, rp) = (local.port().to_string(), remote.port().to_string());
                vec![spec(!local.is_ipv4(), strs(&["-p", "tcp", "-s", &l, "--sport", &lp, "-d", &r, "--dport", &rp]))]
            }
        }
    }
}

/// This process's incarnation: `kcpd_<pid>_<start>`.
fn own_tag() -> String {
    let pid = std::process::id();
    format!("kcpd_{pid}_{}", start_time(pid).unwrap_or(0))
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(19)?.parse().ok()
}

/// Whether `tag` names this process or another live one (a tag that does not parse is not ours to touch).
fn tag_is_live(tag: &str) -> bool {
    let mut it = tag.strip_prefix("kcpd_").unwrap_or("").splitn(2, '_');
    let (Some(Ok(pid)), Some(Ok(start))) = (it.next().map(str::parse::<u32>), it.next().map(str::parse::<u64>)) else {
        return true;
    };
    start_time(pid) == Some(start)
}

fn run(tool: &str, args: &[String], stdin: Option<&str>) -> Result<String, FirewallError> {
    let cmd = format!("{tool} {}", args.join(" "));
    let mut c = Command::new(tool);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = c.spawn().map_err(|e| FirewallError::NoTool(format!("{tool}: {e}")))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        let _ = w.write_all(text.as_bytes());
    }
    let out =
        child.wait_with_output().map_err(|e| FirewallError::Command { cmd: cmd.clone(), stderr: e.to_string() })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let denied = ["Operation not permitted", "Permission denied", "you must be root"];
    if denied.iter().any(|d| stderr.contains(d)) {
        Err(FirewallError::Permission { cmd, stderr })
    } else {
        Err(FirewallError::Command { cmd, stderr })
    }
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// This process's rules.
pub struct Firewall {
    tool: Tool,
    tag: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// nft: the table exists.
    table: bool,
    /// Installed rules: id → what to delete (nft: rule handles; iptables: (command, spec)).
    rules: Vec<(u64, Installed)>,
    next_id: u64,
}

enum Installed {
    Nft(Vec<u64>),
    Iptables(Vec<(&'static str, Vec<String>)>),
}

/// The open firewalls, one per network namespace (a daemon has one; tests run threads in several).
static CURRENT: Mutex<Vec<(u64, Weak<Firewall>)>> = Mutex::new(Vec::new());

/// The calling thread's network namespace (the inode of its `ns/net` link; 0 if unknown).
fn netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
}

impl Firewall {
    /// The process's firewall in the calling thread's network namespace, opened on first use: picks `nft`
    /// (or `iptables`) and removes the tables and rules of kcpd processes that are gone. Rules are
    /// installed and removed by commands run in that namespace.
    pub fn get() -> Result<Arc<Firewall>, FirewallError> {
        let ns = netns();
        let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        cur.retain(|(_, w)| w.strong_count() > 0);
        if let Some(fw) = cur.iter().find(|(n, _)| *n == ns).and_then(|(_, w)| w.upgrade()) {
            return Ok(fw);
        }
        let fw = Arc::new(Firewall::open()?);
        cur.push((ns, Arc::downgrade(&fw)));
        Ok(fw)
    }

    /// Pick the tool and sweep stale entries. `KCPD_FIREWALL=iptables` skips nft (hosts whose own rules
    /// are all iptables, and the tests of that path).
    fn open() -> Result<Firewall, FirewallError> {
        let tag = own_tag();
        let nft = match std::env::var("KCPD_FIREWALL").as_deref() {
            Ok("iptables") => Err(FirewallError::NoTool("nft: skipped (KCPD_FIREWALL=iptables)".into())),
            _ => run("nft", &args(&["list", "tables"]), None),
        };
        let tool = match nft {
            Ok(tables) => {
                for line in tables.lines() {
                    if let Some(name) = line.strip_prefix("table inet ").filter(|n| n.starts_with("kcpd_"))
                        && !tag_is_live(name)
                    {
                        run("nft", &args(&["delete", "table", "inet", name]), None)?;
                    }
                }
                Tool::Nft
            }
            Err(FirewallError::Permission { cmd, stderr }) => return Err(FirewallError::Permission { cmd, stderr }),
            Err(nft) => match run("iptables", &args(&["-w", "-S", "OUTPUT"]), None) {
                Ok(_) => {
                    for tool in ["iptables", "ip6tables"] {
                        sweep_iptables(tool)?;
                    }
                    Tool::Iptables
                }
                Err(FirewallError::NoTool(ipt)) => return Err(FirewallError::NoTool(format!("{nft}; {ipt}"))),
                Err(e) => return Err(e),
            },
        };
        Ok(Firewall { tool, tag, state: Mutex::new(State::default()) })
    }

    /// Which tool is in use.
    pub fn tool(&self) -> Tool {
        self.tool
    }

    /// This process's tag (the nft table's name, the iptables comment).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Install `rule`; it is removed when the guard drops.
    pub fn add(self: &Arc<Self>, rule: Rule) -> Result<RuleGuard, FirewallError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let installed = match self.tool {
            Tool::Nft => {
                let mut script = String::new();
                if !st.table {
                    let t = &self.tag;
                    let _ = writeln!(script, "add table inet {t}");
                    let _ = writeln!(
                        script,
                        "add chain inet {t} output {{ type filter hook output priority filter; policy accept; }}"
                    );
                }
                if !script.is_empty() {
                    run("nft", &args(&["-f", "-"]), Some(&script))?;
                    st.table = true;
                }
                let mut handles = Vec::new();
                for expr in rule.nft() {
                    let mut a = args(&["--echo", "--handle", "add", "rule", "inet", &self.tag, "output"]);
                    a.extend(expr.split(' ').map(String::from));
                    let out = run("nft", &a, None)?;
                    let h = out
                        .split("# handle ")
                        .nth(1)
                        .and_then(|h| h.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse().ok()));
                    handles.push(h.ok_or_else(|| FirewallError::Command {
                        cmd: format!("nft {}", a.join(" ")),
                        stderr: format!("no rule handle in its output: {out:?}"),
                    })?);
                }
                Installed::Nft(handles)
            }
            Tool::Iptables => {
                let specs = rule.iptables(&self.tag);
                for (i, (tool, spec)) in specs.iter().enumerate() {
                    let mut a = args(&["-w", "-A", "OUTPUT"]);
                    a.extend(spec.iter().cloned());
                    if let Err(e) = run(tool, &a, None) {
                        for (tool, spec) in &specs[..i] {
                            delete_iptables(tool, spec);
                        }
                        return Err(e);
                    }
                }
                Installed::Iptables(specs)
            }
        };
        let id = st.next_id;
        st.next_id += 1;
        st.rules.push((id, installed));
        Ok(RuleGuard { fw: self.clone(), id })
    }

    fn remove(&self, id: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = st.rules.iter().position(|r| r.0 == id) else { return };
        let (_, installed) = st.rules.swap_remove(i);
        self.delete(installed);
        if st.rules.is_empty() && st.table {
            // The last rule: the table goes too (nothing of this process stays behind).
            let _ = run("nft", &args(&["delete", "table", "inet", &self.tag]), None);
            st.table = false;
        }
    }

    fn delete(&self, installed: Installed) {
        match installed {
            Installed::Nft(handles) => {
                for h in handles {
                    let h = h.to_string();
                    let _ = run("nft", &args(&["delete", "rule", "inet", &self.tag, "output", "handle", &h]), None);
                }
            }
            Installed::Iptables(specs) => {
                for (tool, spec) in specs {
                    delete_iptables(tool, &spec);
                }
            }
        }
    }

    /// Remove every rule (and the nft table) this process installed; guards dropped later do nothing.
    fn clear(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rules = std::mem::take(&mut st.rules);
        match self.tool {
            Tool::Nft if st.table => {
                let _ = run("nft", &args(&["delete", "table", "inet", &self.tag]), None);
                st.table = false;
            }
            _ => {
                for (_, installed) in rules {
                    self.delete(installed);
                }
            }
        }
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Remove every rule this process still has (the daemon's way out: SIGTERM, SIGINT, a fatal error).
pub fn remove_all() {
    let cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    for fw in cur.iter().filter_map(|(_, w)| w.upgrade()) {
        fw.clear();
    }
}

fn delete_iptables(tool: &str, spec: &[String]) {
    let mut a = args(&["-w", "-D", "OUTPUT"]);
    a.extend(spec.iter().cloned());
    let _ = run(tool, &a, None);
}

/// Delete the tagged rules of kcpd processes that are gone.
fn sweep_iptables(tool: &str) -> Result<(), FirewallError> {
    let Ok(rules) = run(tool, &args(&["-w", "-S", "OUTPUT"]), None) else { return Ok(()) };
    for line in rules.lines() {
        let Some(spec) = line.strip_prefix("-A OUTPUT ") else { continue };
        let words: Vec<String> = spec.split_whitespace().map(|w| w.trim_matches('"').to_string()).collect();
        let Some(tag) = words.windows(2).find(|w| w[0] == "--comment").map(|w| w[1].clone()) else { continue };
        if tag.starts_with("kcpd_") && !tag_is_live(&tag) {
            let mut a = args(&["-w", "-D", "OUTPUT"]);
            a.extend(words);
            run(tool, &a, None)?;
        }
    }
    Ok(())
}

/// One installed rule; dropping it removes the rule.
pub struct RuleGuard {
    fw: Arc<Firewall>,
    id: u64,
}

impl Drop for RuleGuard {
    fn drop(&mut self) {
        self.fw.remove(self.id);
    }
}

impl std::fmt::Debug for RuleGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RuleGuard({} #{})", self.fw.tag, self.id)
    }
}

/// Whether `e` is the error a raw socket gives without CAP_NET_RAW.
pub fn is_permission(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_connection_or_port_and_ttl_1() {
        let d = Rule::Dial { local: "10.0.0.1:40000".parse().unwrap(), remote: "10.0.0.2:29900".parse().unwrap() };
        assert_eq!(d.nft(), ["ip saddr 10.0.0.1 ip daddr 10.0.0.2 ip ttl 1 tcp sport 40000 tcp dport 29900 drop"]);
        let (tool, spec) = &d.iptables("kcpd_1_2")[0];
        assert_eq!(*tool, "iptables");
        assert_eq!(
            spec.join(" "),
            "-p tcp -s 10.0.0.1 --sport 40000 -d 10.0.0.2 --dport 29900 -m ttl --ttl-eq 1 -m comment --comment kcpd_1_2 -j DROP"
        );
        let any6 = Rule::Listen { ip: "::".parse().unwrap(), port: 29900 };
        assert_eq!(any6.nft(), ["ip ttl 1 tcp sport 29900 drop", "ip6 hoplimit 1 tcp sport 29900 drop"]);
        let v = any6.iptables("t");
        assert_eq!((v[0].0, v[1].0), ("iptables", "ip6tables"));
        assert_eq!(v[1].1.join(" "), "-p tcp --sport 29900 -m hl --hl-eq 1 -m comment --comment t -j DROP");
        let one = Rule::Listen { ip: "192.0.2.1".parse().unwrap(), port: 1 };
        assert_eq!(one.nft(), ["ip saddr 192.0.2.1 ip ttl 1 tcp sport 1 drop"]);
        let d6 = Rule::Dial { local: "[::1]:5".parse().unwrap(), remote: "[::1]:6".parse().unwrap() };
        assert_eq!(d6.nft(), ["ip6 saddr ::1 ip6 daddr ::1 ip6 hoplimit 1 tcp sport 5 tcp dport 6 drop"]);
    }

    #[test]
    fn tags_name_a_process_incarnation() {
        let own = own_tag();
        assert!(tag_is_live(&own), "{own}");
        let pid = std::process::id();
        assert!(!tag_is_live(&format!("kcpd_{pid}_1")), "same pid, another start time: gone");
        assert!(!tag_is_live("kcpd_4194305_7"), "beyond pid_max: gone");
        assert!(tag_is_live("kcpd_x"), "not ours to judge");
    }
}
