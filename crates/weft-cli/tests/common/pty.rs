//! Running `weft` on a pseudo-terminal, as from a person's shell, so the terminal-only paths
//! (progress lines, prompts) run; every run is bounded by a timeout, after which the child is
//! killed and the run reported as hung.

use std::io::Read as _;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

/// What a run on a terminal left: its exit status (`None`: it hung and was killed) and every
/// byte it wrote to the terminal.
pub(crate) struct OnTerminal {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) screen: String,
}

/// Runs `command` with stdin, stdout and stderr on a new pseudo-terminal, for at most `limit`.
pub(crate) fn run(mut command: Command, limit: Duration) -> OnTerminal {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .expect("a pseudo-terminal");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    command
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .env("TERM", "xterm");
    let mut child = command.spawn().unwrap();
    // Our copies of the terminal's slave side close here, so the reader sees its end when the
    // child exits.
    drop(command);
    let mut master = std::fs::File::from(master);
    let reader = std::thread::spawn(move || {
        let mut screen = Vec::new();
        // Linux answers EIO once no process has the terminal open; what was read is kept.
        let _ = master.read_to_end(&mut screen);
        screen
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let screen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    OnTerminal { status, screen }
}
