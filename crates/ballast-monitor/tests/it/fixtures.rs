//! The parsers on the fixture files under `tests/fixtures`, good and malformed ones alike.

use std::fmt::Write as _;
use std::path::Path;

use ballast_monitor::parse::{
    ParseError, parse_cgroup_limit, parse_meminfo, parse_proc_cgroup, parse_proc_stat, parse_psi,
};
use expect_test::{Expect, expect};

/// Runs `parse` over every file of `tests/fixtures/<dir>` whose name starts with `prefix`, and
/// lists each file's result: `ok-*` files must parse and `bad-*` files must not.
fn check<T: std::fmt::Debug>(
    dir: &str,
    prefix: &str,
    parse: impl Fn(&str, &str) -> Result<T, ParseError>,
    expect: Expect,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .expect("fixture directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            let base = n.strip_prefix("ok-").or_else(|| n.strip_prefix("bad-"));
            base.is_some_and(|b| b.starts_with(prefix))
        })
        .collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let bytes = std::fs::read(root.join(&name)).expect("fixture file");
        let text = String::from_utf8_lossy(&bytes);
        let result = parse(&name, &text);
        match &result {
            Ok(value) => writeln!(out, "{value:?}").unwrap(),
            Err(error) => writeln!(out, "error: {error}").unwrap(),
        }
        assert_eq!(
            result.is_ok(),
            name.starts_with("ok-"),
            "{name} should {}parse",
            if name.starts_with("ok-") { "" } else { "not " }
        );
    }
    expect.assert_eq(&out);
}

#[test]
fn psi_fixtures() {
    check(
        "psi",
        "",
        parse_psi,
        expect![[r#"
        error: bad-binary.txt: line 1: expected a line starting with `some` or `full`, found `�� garbage`
        error: bad-duplicate.txt: line 2: `some` appears twice
        error: bad-empty.txt: the file is empty
        error: bad-infinite.txt: line 1: `avg10` is not a valid number: `1e999`
        error: bad-negative-total.txt: line 1: `total` is not a valid number: `-4`
        error: bad-no-some.txt: missing the `some` line
        error: bad-no-total.txt: missing total
        error: bad-over-100.txt: line 1: `avg10` is not a valid number: `250.00`
        error: bad-unknown-field.txt: line 1: expected avg10, avg60, avg300 or total, found `extra=2`
        PsiReading { some: PsiLine { avg10: 0.0, avg60: 0.0, avg300: 0.0, total_us: 0 }, full: None }
        PsiReading { some: PsiLine { avg10: 2.24, avg60: 1.41, avg300: 1.2, total_us: 7152181 }, full: Some(PsiLine { avg10: 0.0, avg60: 0.0, avg300: 0.0, total_us: 0 }) }
        PsiReading { some: PsiLine { avg10: 41.5, avg60: 12.03, avg300: 3.1, total_us: 98765432 }, full: Some(PsiLine { avg10: 20.0, avg60: 5.0, avg300: 1.0, total_us: 4567890 }) }
    "#]],
    );
}

#[test]
fn meminfo_fixtures() {
    check(
        "meminfo",
        "",
        parse_meminfo,
        expect![[r#"
        error: bad-empty.txt: the file is empty
        error: bad-no-colon.txt: line 1: expected `Key: value kB`, found `MemTotal  1000 kB`
        error: bad-no-memtotal.txt: missing MemTotal
        error: bad-number.txt: line 1: `MemTotal` is not a valid number: `lots`
        error: bad-overflow.txt: line 1: `MemTotal` is not a valid number: `99999999999999999999999`
        error: bad-unit.txt: line 1: expected a number of kB, found `1000 MB`
        Meminfo { total: 25276063744, available: 24968757248, swap_total: 2147479552, swap_free: 1073739776 }
        Meminfo { total: 1024000, available: 133120, swap_total: 0, swap_free: 0 }
    "#]],
    );
}

#[test]
fn stat_fixtures() {
    check(
        "stat",
        "",
        parse_proc_stat,
        expect![[r#"
        error: bad-empty.txt: the file is empty
        error: bad-no-cpu-line.txt: missing the `cpu` line
        error: bad-number.txt: line 1: `nice` is not a valid number: `two`
        error: bad-too-few-fields.txt: line 1: expected at least 4 numbers after `cpu`, found `cpu 1 2`
        CpuTimes { busy: 6, total: 10, cores: 1 }
        CpuTimes { busy: 5663, total: 3704862, cores: 2 }
    "#]],
    );
}

#[test]
fn proc_self_cgroup_fixtures() {
    check(
        "cgroup",
        "proc-self-cgroup",
        parse_proc_cgroup,
        expect![[r#"
        error: bad-proc-self-cgroup-empty.txt: the file is empty
        error: bad-proc-self-cgroup-no-id.txt: line 1: expected `id:controllers:path`, found `memory:/x`
        error: bad-proc-self-cgroup-relative.txt: line 1: expected a path starting with `/`, found `relative/path`
        [CgroupEntry { hierarchy: 9, controllers: ["name=systemd"], path: "/" }, CgroupEntry { hierarchy: 4, controllers: ["memory"], path: "/process_api/abc" }, CgroupEntry { hierarchy: 1, controllers: ["cpu"], path: "/" }, CgroupEntry { hierarchy: 0, controllers: [], path: "/" }]
        [CgroupEntry { hierarchy: 0, controllers: [], path: "/system.slice/ballast.service" }]
    "#]],
    );
}

#[test]
fn cgroup_limit_fixtures() {
    check(
        "cgroup",
        "memory-max",
        parse_cgroup_limit,
        expect![[r#"
        error: bad-memory-max-empty.txt: the file is empty
        error: bad-memory-max-word.txt: line 1: `limit` is not a valid number: `infinity`
        Some(536870912)
        None
    "#]],
    );
    check(
        "cgroup",
        "v1-limit",
        parse_cgroup_limit,
        expect![[r#"
        None
    "#]],
    );
}
