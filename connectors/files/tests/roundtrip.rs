//! One million CSV rows read and written back through the plugin, loaded as a real cdylib, with
//! bounded memory. This binary holds this one test only, so the process's peak memory is its own.

mod common;

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::time::Instant;

use weft_engine::hooks::Session;
use weft_plugin_abi::ResourceOperation;

const ROWS: u64 = 1_000_000;
/// What the round trip may add to the process's peak memory. Holding the rows would take
/// several hundred MiB (the file alone is over 50 MiB); streaming takes a few.
const BOUND_MIB: u64 = 64;

/// The process's peak resident memory so far, in KiB (Linux `VmHWM`).
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn same_contents(a: &std::path::Path, b: &std::path::Path) -> bool {
    let (mut a, mut b) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut x).unwrap();
        let mut filled = 0;
        while filled < n {
            let m = b.read(&mut y[filled..n]).unwrap();
            if m == 0 {
                return false;
            }
            filled += m;
        }
        if x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
    }
}

#[test]
#[allow(clippy::print_stderr)] // The figures are the point of this test: they go in the log.
fn a_million_csv_rows_round_trip_with_bounded_memory() {
    let plugins = common::plugins();
    let spec = common::spec(
        "id = { type = \"integer\", required = true }\n\
         name = { type = \"string\", max-length = 40 }\n\
         email = { type = \"string\" }\n\
         amount = { type = \"money\", unit = \"decimal\" }\n\
         active = { type = \"boolean\" }\n",
    );
    let dir = common::temp_dir("million");
    let input = dir.join("in.csv");
    let output = dir.join("out.csv");
    {
        let mut w = BufWriter::new(File::create(&input).unwrap());
        writeln!(w, "id,name,email,amount,active").unwrap();
        for i in 1..=ROWS {
            let active = if i % 3 == 0 { "false" } else { "true" };
            writeln!(
                w,
                "{i},Person {i},person{i}@example.com,{}.{:02},{active}",
                i % 10_000,
                i % 100
            )
            .unwrap();
        }
        w.flush().unwrap();
    }
    let size = std::fs::metadata(&input).unwrap().len();
    let rows = &spec.file().resources["rows"];
    let before = peak_kib();
    let started = Instant::now();

    let mut reader = Session::open(
        &plugins,
        spec.file(),
        "rows",
        rows,
        ResourceOperation::List,
        input.to_str().unwrap(),
    )
    .unwrap();
    let mut writer = Session::open(
        &plugins,
        spec.file(),
        "rows",
        rows,
        ResourceOperation::Create,
        output.to_str().unwrap(),
    )
    .unwrap();
    let mut read = 0u64;
    loop {
        let batch = reader.next(1000).unwrap();
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        read += batch.records.len() as u64;
        let results = writer.write(batch.records).unwrap();
        assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
        if batch.done {
            break;
        }
    }
    assert_eq!(reader.close().unwrap(), ROWS);
    assert_eq!(writer.close().unwrap(), ROWS);
    let elapsed = started.elapsed();
    let after = peak_kib();
    assert_eq!(read, ROWS);
    assert!(
        same_contents(&input, &output),
        "the copy differs from the original"
    );

    eprintln!(
        "round trip of {ROWS} rows ({} MiB): {:.1?}; peak memory {:?} KiB before, {:?} KiB after",
        size >> 20,
        elapsed,
        before,
        after
    );
    if let (Some(before), Some(after)) = (before, after) {
        let grew_mib = after.saturating_sub(before) >> 10;
        assert!(
            grew_mib < BOUND_MIB,
            "peak memory grew by {grew_mib} MiB while streaming a {} MiB file",
            size >> 20
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
