//! A packet capture with Debian's tcpdump in a network namespace, for tests that check what
//! crossed a wire (only WireGuard, no payload in clear).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// A running `tcpdump -nn -l -A` (each packet's header line, then its bytes as text).
pub struct Capture {
    child: Child,
}

impl Capture {
    /// Starts capturing on `interface` (`any` for every one) of namespace `netns` the packets
    /// `filter` selects, and returns once tcpdump says it listens.
    pub fn start(netns: &str, interface: &str, filter: &str) -> Capture {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "tcpdump", "-i", interface, "-nn", "-l", "-A", filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running tcpdump (apt-get install tcpdump)");
        let mut said = std::io::BufReader::new(child.stderr.take().expect("tcpdump's stderr"));
        let mut line = String::new();
        while said.read_line(&mut line).expect("reading tcpdump's stderr") > 0 && !line.contains("listening on") {
            line.clear();
        }
        Capture { child }
    }

    /// Stops it (after 300 ms, for the last packets to be printed): everything it printed.
    pub fn finish(self) -> String {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGINT);
        let out = self.child.wait_with_output().expect("waiting for tcpdump");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The packets' header lines of what [`Capture::finish`] returned.
    pub fn headers(seen: &str) -> Vec<&str> {
        seen.lines().filter(|l| l.contains(" IP ")).collect()
    }
}
