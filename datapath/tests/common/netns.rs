//! A throwaway network namespace for the tests that need root.

use std::os::fd::AsRawFd;

/// A network namespace with a veth pair to this one, removed (with the pair) on drop.
pub struct Netns {
    name: String,
}

pub fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip").args(args).status().expect("ip(8) runs");
    assert!(st.success(), "ip {}", args.join(" "));
}

impl Netns {
    /// `name` with one end of a veth pair (`outer` here at `outer_ip`/24, `inner` there at `inner_ip`/24).
    pub fn new(name: &str, outer: &str, inner: &str, outer_ip: &str, inner_ip: &str) -> Netns {
        let _ = std::process::Command::new("ip").args(["netns", "del", name]).status();
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
        let _ = std::process::Command::new("ip").args(["netns", "del", name]).status();
        ip(&["netns", "add", name]);
        let ns = Netns { name: name.to_string() };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
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
