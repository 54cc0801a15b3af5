//! Root for the tests that need it, and a throwaway network namespace.

use std::os::fd::AsRawFd;

/// Whether this process is privileged enough for `what` (root). Otherwise the test is skipped loudly,
/// unless `KCPD_REQUIRE_PRIVILEGED` is set (`.ci/run`, which runs as root), where a skip is a failure.
pub fn privileged(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("KCPD_REQUIRE_PRIVILEGED").is_none(),
        "{what} needs root, and KCPD_REQUIRE_PRIVILEGED is set"
    );
    eprintln!("SKIPPED: {what} needs root");
    false
}

/// A network namespace with a veth pair to this one, removed (with the pair) on drop.
pub struct Netns {
    name: String,
}

/// Remove `name` if a crashed run left it (quietly: usually there is none).
fn del(name: &str) {
    let _ = std::process::Command::new("ip").args(["netns", "del", name]).output();
}

pub fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip").args(args).status().expect("ip(8) runs");
    assert!(st.success(), "ip {}", args.join(" "));
}

impl Netns {
    /// `name` with one end of a veth pair (`outer` here at `outer_ip`/24, `inner` there at `inner_ip`/24).
    pub fn new(name: &str, outer: &str, inner: &str, outer_ip: &str, inner_ip: &str) -> Netns {
        del(name);
        ip(&["netns", "add", name]);
        let ns = Netns { name: name.to_string() };
        ip(&["link", "add", outer, "type", "veth", "peer", "name", inner, "netns", name]);
        ip(&["addr", "add", &format!("{outer_ip}/24"), "dev", outer]);
        ip(&["link", "set", outer, "up"]);
        ip(&["-n", name, "addr", "add", &format!("{inner_ip}/24"), "dev", inner]);
        ip(&["-n", name, "link", "set", inner, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    /// `name` with only its loopback, up.
    pub fn bare(name: &str) -> Netns {
        del(name);
        ip(&["netns", "add", name]);
        let ns = Netns { name: name.to_string() };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    /// Two namespaces joined by a veth pair: `a` at 10.77.`net`.1/24, `b` at 10.77.`net`.2/24.
    pub fn pair(a: &str, b: &str, net: u8) -> (Netns, Netns) {
        let (na, nb) = (Netns::bare(a), Netns::bare(b));
        let (va, vb) = (format!("kv{net}a"), format!("kv{net}b"));
        ip(&["link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b]);
        for (ns, dev, host) in [(a, &va, 1), (b, &vb, 2)] {
            ip(&["-n", ns, "addr", "add", &format!("10.77.{net}.{host}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        (na, nb)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `f` on a thread inside the namespace (threads it starts are inside too; sockets it opens stay
    /// there wherever they are used).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("the namespace's file");
            // SAFETY: a valid namespace fd; CLONE_NEWNET moves only this thread.
            assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
