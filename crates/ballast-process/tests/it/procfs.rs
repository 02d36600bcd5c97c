//! Reading a process tree from a fixture `/proc`: a python process, a shell it started and the
//! worker that shell started.

use std::path::PathBuf;

use ballast_process::{ProcError, ProcReader, TreeReading};

fn fixtures() -> ProcReader {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc");
    ProcReader::new(root, 4096)
}

#[test]
fn a_tree_sums_its_processes() {
    let reading = fixtures().read_tree(100).unwrap();
    assert_eq!(
        reading,
        TreeReading {
            pid: 100,
            state: 'S',
            processes: 3,
            rss_bytes: (2560 + 256 + 1024) * 4096,
            vsz_bytes: 52_428_800 + 10_485_760 + 20_971_520,
            cpu_ticks: (150 + 30 + 7 + 3) + (20 + 10) + (400 + 100),
            threads: 3 + 1 + 2,
            open_fds: 4 + 3,
            read_bytes: 4096 + 100,
            write_bytes: 8192,
        }
    );
    let subtree = fixtures().read_tree(101).unwrap();
    assert_eq!(subtree.processes, 2);
}

#[test]
fn a_missing_process_is_gone() {
    assert_eq!(
        fixtures().read_tree(999).unwrap_err(),
        ProcError::Gone { pid: 999 }
    );
}

#[test]
fn the_real_proc_reads_this_test_process() {
    let reading = ProcReader::default().read_tree(std::process::id()).unwrap();
    assert!(
        reading.rss_bytes > 0 && reading.threads >= 1 && reading.open_fds >= 3,
        "{reading:?}"
    );
}
