//! The `weft` command: connectors, specs, and (as they land) connections and syncs.

use std::process::ExitCode;

fn main() -> ExitCode {
    weft_cli::main()
}
