//! Parsers for the /proc files: `meminfo`, `stat`, `loadavg`, `self/stat` and the ids in
//! `<pid>/stat`.

use super::{ParseError, Problem, bad_number, error, parse_f64, parse_u64, unexpected};

/// The figures of `/proc/meminfo` the monitor uses, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meminfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`, or `MemFree + Buffers + Cached` on kernels without it.
    pub available: u64,
    /// `SwapTotal` (0 when absent).
    pub swap_total: u64,
    /// `SwapFree` (0 when absent).
    pub swap_free: u64,
}

/// Parses `/proc/meminfo` (`Key:   value kB` lines). `MemTotal` is required, and either
/// `MemAvailable` or `MemFree`; lines the monitor does not use are skipped unread.
pub fn parse_meminfo(file: &str, text: &str) -> Result<Meminfo, ParseError> {
    let mut total = None;
    let mut available = None;
    let mut free = None;
    let mut buffers = 0;
    let mut cached = 0;
    let mut swap_total = 0;
    let mut swap_free = 0;
    let mut any_line = false;
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        any_line = true;
        let Some((key, rest)) = line.split_once(':') else {
            return Err(unexpected(file, n, "`Key: value kB`", line));
        };
        let field: &'static str = match key {
            "MemTotal" => "MemTotal",
            "MemAvailable" => "MemAvailable",
            "MemFree" => "MemFree",
            "Buffers" => "Buffers",
            "Cached" => "Cached",
            "SwapTotal" => "SwapTotal",
            "SwapFree" => "SwapFree",
            _ => continue,
        };
        let value = kilobytes(file, n, field, rest)?;
        match field {
            "MemTotal" => total = Some(value),
            "MemAvailable" => available = Some(value),
            "MemFree" => free = Some(value),
            "Buffers" => buffers = value,
            "Cached" => cached = value,
            "SwapTotal" => swap_total = value,
            _ => swap_free = value,
        }
    }
    if !any_line {
        return Err(error(file, Problem::Empty));
    }
    let total = total.ok_or_else(|| error(file, Problem::Missing("MemTotal")))?;
    let available = match (available, free) {
        (Some(a), _) => a,
        (None, Some(f)) => f.saturating_add(buffers).saturating_add(cached),
        (None, None) => return Err(error(file, Problem::Missing("MemAvailable or MemFree"))),
    };
    Ok(Meminfo {
        total,
        available: available.min(total),
        swap_total,
        swap_free: swap_free.min(swap_total),
    })
}

/// `  123456 kB` as bytes.
fn kilobytes(file: &str, n: usize, field: &'static str, rest: &str) -> Result<u64, ParseError> {
    let mut words = rest.split_ascii_whitespace();
    let number = words.next().unwrap_or("");
    let value = parse_u64(file, n, field, number)?;
    match (words.next(), words.next()) {
        (None, None) => Ok(value),
        (Some("kB"), None) => Ok(value.saturating_mul(1024)),
        _ => Err(unexpected(file, n, "a number of kB", rest.trim())),
    }
}

/// Cumulative CPU time of the whole machine, in clock ticks, from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Busy time: everything but idle and iowait.
    pub busy: u64,
    /// All time: user, nice, system, idle, iowait, irq, softirq and steal.
    pub total: u64,
    /// Logical cores: the number of `cpuN` lines.
    pub cores: u32,
}

/// Parses `/proc/stat`: the aggregate `cpu` line (at least user, nice, system and idle) and the
/// count of `cpuN` lines. Other lines are skipped.
pub fn parse_proc_stat(file: &str, text: &str) -> Result<CpuTimes, ParseError> {
    const NAMES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut times = None;
    let mut cores: u32 = 0;
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("cpu") => {
                if times.is_some() {
                    return Err(error(
                        file,
                        Problem::Duplicate {
                            line: n,
                            what: "cpu",
                        },
                    ));
                }
                let mut values = [0u64; 8];
                let mut count = 0;
                for (slot, (word, name)) in values.iter_mut().zip(words.zip(NAMES)) {
                    *slot = parse_u64(file, n, name, word)?;
                    count += 1;
                }
                if count < 4 {
                    return Err(unexpected(file, n, "at least 4 numbers after `cpu`", line));
                }
                let total = values.iter().fold(0u64, |a, v| a.saturating_add(*v));
                let idle = values[3].saturating_add(values[4]);
                times = Some((total.saturating_sub(idle), total));
            }
            Some(word)
                if word.len() > 3
                    && word.starts_with("cpu")
                    && word[3..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                cores = cores.saturating_add(1);
            }
            _ => {}
        }
    }
    if text.trim().is_empty() {
        return Err(error(file, Problem::Empty));
    }
    let (busy, total) = times.ok_or_else(|| error(file, Problem::Missing("the `cpu` line")))?;
    Ok(CpuTimes {
        busy,
        total,
        cores: cores.max(1),
    })
}

/// Parses `/proc/loadavg` (`0.52 0.40 0.33 1/234 5678`): the three load averages.
pub fn parse_loadavg(file: &str, text: &str) -> Result<[f64; 3], ParseError> {
    let mut words = text.split_ascii_whitespace();
    let mut out = [0.0; 3];
    for (slot, name) in out.iter_mut().zip(["load1", "load5", "load15"]) {
        let Some(word) = words.next() else {
            if text.trim().is_empty() {
                return Err(error(file, Problem::Empty));
            }
            return Err(error(file, Problem::Missing("three load averages")));
        };
        *slot = parse_f64(file, 1, name, word)?;
    }
    Ok(out)
}

/// A process's CPU time and resident set, from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessTimes {
    /// User plus system time, in clock ticks.
    pub ticks: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`: utime and stime (fields 14 and 15) and rss (field 24). The command
/// name (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_self_stat(file: &str, text: &str) -> Result<ProcessTimes, ParseError> {
    if text.trim().is_empty() {
        return Err(error(file, Problem::Empty));
    }
    let Some(close) = text.rfind(')') else {
        return Err(unexpected(file, 1, "`pid (comm) state ...`", text));
    };
    let mut fields = text[close + 1..].split_ascii_whitespace();
    // After `)` come field 3 (state) and onwards, so field n is word n - 3.
    let utime = fields.nth(11);
    let stime = fields.next();
    let rss = fields.nth(8);
    match (utime, stime, rss) {
        (Some(u), Some(s), Some(r)) => {
            let utime = parse_u64(file, 1, "utime", u)?;
            let stime = parse_u64(file, 1, "stime", s)?;
            let rss_pages = parse_u64(file, 1, "rss", r)?;
            Ok(ProcessTimes {
                ticks: utime.saturating_add(stime),
                rss_pages,
            })
        }
        _ => Err(error(
            file,
            Problem::Missing("utime, stime and rss (fields 14, 15 and 24)"),
        )),
    }
}

/// A process's id and its parent's, from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatIds {
    /// The process's id (field 1).
    pub pid: u32,
    /// Its parent's id (field 4); 0 for the first process and for kernel threads' parent.
    pub ppid: u32,
}

/// Parses the process id (field 1) and the parent's (field 4) from `/proc/<pid>/stat`. The
/// command name in between is in parentheses and may hold spaces and parentheses itself, so the
/// pid is read before the first `(` and the fields after the last `)`.
pub fn parse_stat_ids(file: &str, text: &str) -> Result<StatIds, ParseError> {
    if text.trim().is_empty() {
        return Err(error(file, Problem::Empty));
    }
    let shape = "`pid (comm) state ppid ...`";
    let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
        return Err(unexpected(file, 1, shape, text));
    };
    if close < open {
        return Err(unexpected(file, 1, shape, text));
    }
    let pid = parse_u32(file, "pid", text[..open].trim())?;
    let mut fields = text[close + 1..].split_ascii_whitespace();
    let (Some(_state), Some(ppid)) = (fields.next(), fields.next()) else {
        return Err(error(file, Problem::Missing("the parent's id (field 4)")));
    };
    Ok(StatIds {
        pid,
        ppid: parse_u32(file, "ppid", ppid)?,
    })
}

fn parse_u32(file: &str, field: &'static str, value: &str) -> Result<u32, ParseError> {
    value
        .parse::<u32>()
        .map_err(|_| bad_number(file, 1, field, value))
}

/// The bit of `CAP_SYS_RESOURCE` in a capability set: the privilege the kernel asks of a PSI
/// trigger whose window is not a whole multiple of 2 s, and the one that has it check a trigger
/// every tenth of its window rather than at its 2 s averaging.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// The effective capability set (`CapEff:`, hexadecimal) of `/proc/<pid>/status`.
pub fn parse_cap_eff(file: &str, text: &str) -> Result<u64, ParseError> {
    if text.trim().is_empty() {
        return Err(error(file, Problem::Empty));
    }
    for (index, line) in text.lines().enumerate() {
        let Some(value) = line.strip_prefix("CapEff:") else {
            continue;
        };
        let value = value.trim();
        return u64::from_str_radix(value, 16)
            .map_err(|_| bad_number(file, index + 1, "CapEff", value));
    }
    Err(error(file, Problem::Missing("CapEff")))
}

/// Whether the capability set `caps` holds capability number `cap`.
pub fn has_capability(caps: u64, cap: u32) -> bool {
    cap < 64 && caps & (1 << cap) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ids_come_from_around_the_command_name() {
        let text = "42 (we (ird) name) S 7 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 1 2 3\n";
        assert_eq!(
            parse_stat_ids("stat", text).unwrap(),
            StatIds { pid: 42, ppid: 7 }
        );
        let e = parse_stat_ids("42/stat", "42 (x) S").unwrap_err();
        assert_eq!(e.to_string(), "42/stat: missing the parent's id (field 4)");
        let e = parse_stat_ids("42/stat", "42 (x) S -1 1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "42/stat: line 1: `ppid` is not a valid number: `-1`"
        );
        let e = parse_stat_ids("42/stat", "42 x) S (1 1").unwrap_err();
        assert!(e.to_string().contains("expected `pid (comm)"), "{e}");
        assert!(parse_stat_ids("42/stat", "").is_err());
        assert!(parse_stat_ids("42/stat", "x (y) S 1").is_err());
    }

    #[test]
    fn cap_eff_is_read_in_hexadecimal() {
        let status = "Name:\tballast\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t000001fffeffffff\nCapBnd:\t000001ffffffffff\n";
        let caps = parse_cap_eff("status", status).unwrap();
        assert_eq!(caps, 0x0000_01ff_feff_ffff);
        // Root without CAP_SYS_RESOURCE, as in many containers.
        assert!(!has_capability(caps, CAP_SYS_RESOURCE));
        assert!(has_capability(caps, CAP_SYS_RESOURCE - 1));
        assert!(has_capability(
            parse_cap_eff("status", "CapEff: 0000000001000000").unwrap(),
            CAP_SYS_RESOURCE
        ));
        assert!(!has_capability(u64::MAX, 64));
    }

    #[test]
    fn cap_eff_errors_name_the_field() {
        let e = parse_cap_eff("status", "Name: x\nCapEff:\tzz\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "status: line 2: `CapEff` is not a valid number: `zz`"
        );
        let e = parse_cap_eff("status", "Name: x\n").unwrap_err();
        assert_eq!(e.to_string(), "status: missing CapEff");
        assert!(parse_cap_eff("status", " \n").is_err());
        assert!(parse_cap_eff("status", "CapEff: 1ffffffffffffffff").is_err());
    }

    #[test]
    fn meminfo_falls_back_to_free_buffers_cached() {
        let m = parse_meminfo(
            "meminfo",
            "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 20 kB\n",
        )
        .unwrap();
        assert_eq!(m.available, 130 * 1024);
        assert_eq!(m.swap_total, 0);
    }

    #[test]
    fn meminfo_errors_name_the_field() {
        let e = parse_meminfo("meminfo", "MemTotal: lots kB\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "meminfo: line 1: `MemTotal` is not a valid number: `lots`"
        );
        let e = parse_meminfo("meminfo", "MemFree: 1 kB\n").unwrap_err();
        assert_eq!(e.to_string(), "meminfo: missing MemTotal");
        let e = parse_meminfo("meminfo", "MemTotal 1 kB\n").unwrap_err();
        assert!(e.to_string().contains("expected `Key: value kB`"), "{e}");
    }

    #[test]
    fn stat_counts_cores_and_busy_time() {
        let t = parse_proc_stat(
            "stat",
            "cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 5 0 5 35 5 0 0 0 0 0\ncpu1 5 0 5 35 5 0 0 0 0 0\nintr 1 2\n",
        )
        .unwrap();
        assert_eq!(
            t,
            CpuTimes {
                busy: 20,
                total: 100,
                cores: 2
            }
        );
        let e = parse_proc_stat("stat", "cpu 1 2\n").unwrap_err();
        assert!(e.to_string().contains("at least 4 numbers"), "{e}");
    }

    #[test]
    fn self_stat_counts_from_the_last_parenthesis() {
        let text = "42 (we (ird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 1 2 3";
        assert_eq!(
            parse_self_stat("stat", text).unwrap(),
            ProcessTimes {
                ticks: 10,
                rss_pages: 3
            }
        );
        assert!(parse_self_stat("stat", "42 (x) S 1").is_err());
    }

    #[test]
    fn loadavg() {
        assert_eq!(
            parse_loadavg("loadavg", "0.52 0.40 0.33 1/234 5678\n").unwrap(),
            [0.52, 0.40, 0.33]
        );
        assert!(parse_loadavg("loadavg", "0.5 nan 1").is_err());
    }
}
