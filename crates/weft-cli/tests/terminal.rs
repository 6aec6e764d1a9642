//! Every command with a progress line, run on a pseudo-terminal (where the line is drawn, from
//! a ticker thread): each one finishes, within a generous bound, instead of hanging.

mod common;

use std::time::Duration;

use common::{Sandbox, flow_sims, flow_workspace, free_port, pty};

/// Far beyond what each command needs; only a hang reaches it.
const LIMIT: Duration = Duration::from_secs(120);

fn on_terminal(s: &Sandbox, args: &[&str]) -> pty::OnTerminal {
    let ran = pty::run(s.command(args), LIMIT);
    s.printed(ran.screen.as_bytes());
    assert!(
        ran.status.is_some(),
        "`weft {}` hung on a terminal; it printed:\n{}",
        args.join(" "),
        ran.screen
    );
    ran
}

#[test]
fn commands_with_a_progress_line_finish_on_a_terminal() {
    let port = free_port();
    let (k, x) = flow_sims(port, 40);
    let s = Sandbox::new("terminal");
    flow_workspace(&s, &k, &x, port);

    // `weft read`: records on stdout, the progress line on stderr, both on the terminal.
    let read = on_terminal(&s, &["read", "kantata", "invoices"]);
    assert_eq!(read.status.unwrap().code(), Some(0), "{}", read.screen);
    assert!(
        read.screen.contains("record(s) of `invoices`"),
        "{}",
        read.screen
    );

    // `weft sync run`, a dry run and then the run itself.
    let dry = on_terminal(&s, &["sync", "run", "kantata-xero", "--dry-run"]);
    assert_eq!(dry.status.unwrap().code(), Some(0), "{}", dry.screen);
    assert!(dry.screen.contains("would create"), "{}", dry.screen);
    let run = on_terminal(&s, &["sync", "run", "kantata-xero"]);
    assert!(
        matches!(run.status.unwrap().code(), Some(0 | 10)),
        "{}",
        run.screen
    );
    assert!(run.screen.contains("call(s)"), "{}", run.screen);
    // The line was drawn (the terminal path ran) and cleared before the report.
    assert!(run.screen.contains("kantata-xero"), "{}", run.screen);
    s.assert_no_plain_secret();
}
