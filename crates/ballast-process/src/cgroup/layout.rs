//! Where the daemon's cgroups are: pure parsers of `/proc/self/cgroup` and
//! `/proc/self/mountinfo`, and the choice between a cgroup v2 hierarchy with the memory
//! controller and the v1 hierarchies of `memory`, `cpu` and `cpuacct`.
//!
//! Paths here are the machine's (`/sys/fs/cgroup/...`); the IO shell reads them under its root.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// Which cgroup version the plugins' cgroups are made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// Legacy hierarchies, one per controller (or set of co-mounted controllers).
    V1,
    /// The unified hierarchy.
    V2,
}

impl Version {
    /// `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine {
    /// The hierarchy id (0 for the unified hierarchy).
    pub hierarchy: u32,
    /// The v1 controllers bound to the hierarchy (empty for v2; `name=systemd` for a named one).
    pub controllers: Vec<String>,
    /// The cgroup's path inside the hierarchy, starting with `/`.
    pub path: String,
}

impl CgroupLine {
    /// Whether this is the unified hierarchy's line (`0::/path`).
    pub fn is_v2(&self) -> bool {
        self.hierarchy == 0 && self.controllers.is_empty()
    }
}

/// Parses `/proc/<pid>/cgroup`. Lines that are not `id:controllers:/path` are errors.
pub fn parse_proc_cgroup(text: &str) -> Result<Vec<CgroupLine>, CgroupError> {
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| CgroupError::Parse {
            file: "/proc/self/cgroup".to_owned(),
            problem: format!("line {}: {what}: `{}`", index + 1, excerpt(line)),
        };
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected `id:controllers:path`"));
        };
        let hierarchy = id
            .parse::<u32>()
            .map_err(|_| bad("the hierarchy id is not a number"))?;
        if !path.starts_with('/') {
            return Err(bad("the path does not start with `/`"));
        }
        lines.push(CgroupLine {
            hierarchy,
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: path.to_owned(),
        });
    }
    Ok(lines)
}

/// A cgroup file system mount, from `/proc/<pid>/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// The cgroup the mount shows at its mount point (`/` unless a sub-tree is mounted).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `cgroup2` (v2) or `cgroup` (v1).
    pub v2: bool,
    /// The v1 controllers it carries (from its super options); empty for v2.
    pub controllers: Vec<String>,
    /// Whether it is mounted read-only.
    pub read_only: bool,
}

/// Parses the cgroup mounts of `/proc/<pid>/mountinfo`; other mounts are skipped. A line too
/// short to be a mount is an error.
pub fn parse_mountinfo(text: &str) -> Result<Vec<CgroupMount>, CgroupError> {
    let mut mounts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| CgroupError::Parse {
            file: "/proc/self/mountinfo".to_owned(),
            problem: format!("line {}: {what}: `{}`", index + 1, excerpt(line)),
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|f| *f == "-") else {
            return Err(bad("no ` - ` before the file system type"));
        };
        if separator < 6 || fields.len() < separator + 3 {
            return Err(bad("too few fields"));
        }
        let fs_type = fields[separator + 1];
        let v2 = match fs_type {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let mount_options = fields[5];
        let super_options = fields[separator + 3..].join(" ");
        let read_only = mount_options.split(',').any(|o| o == "ro")
            || super_options.split(',').any(|o| o == "ro");
        const NOT_CONTROLLERS: [&str; 8] = [
            "rw",
            "ro",
            "relatime",
            "noatime",
            "nosuid",
            "nodev",
            "noexec",
            "clone_children",
        ];
        let controllers = if v2 {
            Vec::new()
        } else {
            super_options
                .split(',')
                .filter(|o| {
                    !o.is_empty()
                        && !NOT_CONTROLLERS.contains(o)
                        && !o.contains('=')
                        && !o.starts_with("xattr")
                })
                .map(str::to_owned)
                .collect()
        };
        mounts.push(CgroupMount {
            root: unescape(fields[3]),
            mount_point: PathBuf::from(unescape(fields[4])),
            v2,
            controllers,
            read_only,
        });
    }
    Ok(mounts)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn excerpt(line: &str) -> String {
    line.chars().take(120).collect()
}

/// A v1 hierarchy the daemon is in, for one or more of the controllers ballast uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// The controllers of its mount that ballast uses: `memory`, `cpu`, `cpuacct`.
    pub controllers: Vec<String>,
    /// The daemon's cgroup in it.
    pub dir: PathBuf,
    /// Whether its mount is read-only.
    pub read_only: bool,
}

impl Hierarchy {
    /// Whether it carries `controller`.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// What the daemon's cgroup lines and the mounts say, before any cgroup file is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// The daemon's cgroup in the unified hierarchy, when it is mounted, and whether read-only.
    pub v2: Option<(PathBuf, bool)>,
    /// The daemon's cgroups in the v1 hierarchies of `memory`, `cpu` and `cpuacct` (memory first;
    /// a hierarchy that carries several is listed once).
    pub v1: Vec<Hierarchy>,
}

/// The controllers ballast puts a plugin's process under, in v1 hierarchies.
pub const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "cpuacct"];

/// Where the daemon's cgroups are, from its `/proc/self/cgroup` lines and the cgroup mounts.
pub fn discover(lines: &[CgroupLine], mounts: &[CgroupMount]) -> Discovered {
    let mut found = Discovered::default();
    if let Some(line) = lines.iter().find(|l| l.is_v2())
        && let Some(mount) = mounts.iter().find(|m| m.v2)
    {
        found.v2 = Some((join(mount, &line.path), mount.read_only));
    }
    for controller in V1_CONTROLLERS {
        let Some(mount) = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
        else {
            continue;
        };
        let Some(line) = lines
            .iter()
            .find(|l| l.hierarchy != 0 && l.controllers.iter().any(|c| c == controller))
        else {
            continue;
        };
        let dir = join(mount, &line.path);
        match found.v1.iter_mut().find(|h| h.dir == dir) {
            Some(hierarchy) => hierarchy.controllers.push(controller.to_owned()),
            None => found.v1.push(Hierarchy {
                controllers: vec![controller.to_owned()],
                dir,
                read_only: mount.read_only,
            }),
        }
    }
    // Without memory, v1 is of no use to ballast.
    if !found.v1.iter().any(|h| h.has("memory")) {
        found.v1.clear();
    }
    found
}

/// The directory of cgroup `path` under `mount`: the mount shows its `root` at its mount point.
fn join(mount: &CgroupMount, path: &str) -> PathBuf {
    let relative = if mount.root == "/" {
        path
    } else {
        path.strip_prefix(mount.root.as_str()).unwrap_or(path)
    };
    let relative = relative.trim_start_matches('/');
    if relative.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(relative)
    }
}

/// The hierarchy the plugins' cgroups are made in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The unified hierarchy: the daemon's cgroup, and whether the `cpu` controller is there too.
    V2 {
        /// The daemon's cgroup.
        dir: PathBuf,
        /// Whether `cpu` is available (else no CPU quota).
        cpu: bool,
    },
    /// The v1 hierarchies (memory first).
    V1 {
        /// The daemon's cgroup in each.
        hierarchies: Vec<Hierarchy>,
    },
}

impl Layout {
    /// Which version.
    pub fn version(&self) -> Version {
        match self {
            Layout::V2 { .. } => Version::V2,
            Layout::V1 { .. } => Version::V1,
        }
    }

    /// The daemon's cgroup in each hierarchy used.
    pub fn dirs(&self) -> Vec<&Path> {
        match self {
            Layout::V2 { dir, .. } => vec![dir.as_path()],
            Layout::V1 { hierarchies } => hierarchies.iter().map(|h| h.dir.as_path()).collect(),
        }
    }

    /// Whether a CPU quota can be set.
    pub fn has_cpu(&self) -> bool {
        match self {
            Layout::V2 { cpu, .. } => *cpu,
            Layout::V1 { hierarchies } => hierarchies.iter().any(|h| h.has("cpu")),
        }
    }
}

/// Chooses the hierarchy: v2 when its `cgroup.controllers` (`v2_controllers`, the file's text
/// where it could be read) offers `memory`, else the v1 memory hierarchy; or why neither will do.
pub fn choose(found: &Discovered, v2_controllers: Option<&str>) -> Result<Layout, String> {
    let v2_offers =
        |c: &str| v2_controllers.is_some_and(|text| text.split_ascii_whitespace().any(|w| w == c));
    if let Some((dir, read_only)) = &found.v2
        && v2_offers("memory")
    {
        if *read_only {
            return Err(format!(
                "the cgroup v2 file system holding {} is mounted read-only",
                dir.display()
            ));
        }
        return Ok(Layout::V2 {
            dir: dir.clone(),
            cpu: v2_offers("cpu"),
        });
    }
    if !found.v1.is_empty() {
        if let Some(h) = found.v1.iter().find(|h| h.read_only && h.has("memory")) {
            return Err(format!(
                "the cgroup v1 memory hierarchy holding {} is mounted read-only",
                h.dir.display()
            ));
        }
        // A read-only cpu hierarchy only costs the CPU quota.
        let hierarchies = found.v1.iter().filter(|h| !h.read_only).cloned().collect();
        return Ok(Layout::V1 { hierarchies });
    }
    Err(match &found.v2 {
        Some((dir, _)) => format!(
            "the memory controller is neither in the cgroup v2 hierarchy ({} offers `{}`) nor in a mounted cgroup v1 hierarchy",
            dir.join("cgroup.controllers").display(),
            v2_controllers.map_or("nothing readable", str::trim)
        ),
        None => "no cgroup file system with the memory controller is mounted".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn a_hybrid_machine_uses_the_v1_hierarchies_when_v2_lacks_memory() {
        let found = discover(
            &parse_proc_cgroup(HYBRID_CGROUP).unwrap(),
            &parse_mountinfo(HYBRID_MOUNTS).unwrap(),
        );
        assert_eq!(
            found.v2,
            Some((PathBuf::from("/sys/fs/cgroup/unified"), false))
        );
        let dirs: Vec<_> = found.v1.iter().map(|h| h.dir.clone()).collect();
        assert_eq!(
            dirs,
            [
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"),
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/cpuacct"),
            ]
        );
        let layout = choose(&found, Some("hugetlb\n")).unwrap();
        assert_eq!(layout.version(), Version::V1);
        assert!(layout.has_cpu());
        // Were memory offered in the unified hierarchy, it would win.
        let layout = choose(&found, Some("cpu io memory pids\n")).unwrap();
        assert_eq!(
            layout,
            Layout::V2 {
                dir: PathBuf::from("/sys/fs/cgroup/unified"),
                cpu: true
            }
        );
    }

    #[test]
    fn co_mounted_controllers_are_one_hierarchy() {
        let mounts = "31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                      33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
        let lines = "5:cpu,cpuacct:/a\n4:memory:/a\n";
        let found = discover(
            &parse_proc_cgroup(lines).unwrap(),
            &parse_mountinfo(mounts).unwrap(),
        );
        assert_eq!(found.v1.len(), 2);
        assert_eq!(found.v1[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            found.v1[1].dir,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a")
        );
    }

    #[test]
    fn a_pure_v2_machine_and_a_namespaced_mount() {
        let mounts = "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let found = discover(
            &parse_proc_cgroup("0::/system.slice/ballast.service\n").unwrap(),
            &parse_mountinfo(mounts).unwrap(),
        );
        assert_eq!(
            choose(&found, Some("cpuset cpu io memory pids")).unwrap(),
            Layout::V2 {
                dir: PathBuf::from("/sys/fs/cgroup/system.slice/ballast.service"),
                cpu: true
            }
        );
        // A container's mount shows a sub-tree: the line's path is relative to it.
        let mounts = "30 25 0:26 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n";
        let found = discover(
            &parse_proc_cgroup("0::/docker/abc/app\n").unwrap(),
            &parse_mountinfo(mounts).unwrap(),
        );
        assert_eq!(found.v2, Some((PathBuf::from("/sys/fs/cgroup/app"), true)));
        assert_eq!(
            choose(&found, Some("memory")).unwrap_err(),
            "the cgroup v2 file system holding /sys/fs/cgroup/app is mounted read-only"
        );
    }

    #[test]
    fn nothing_usable_says_what_was_found() {
        let found = discover(
            &parse_proc_cgroup("0::/\n").unwrap(),
            &parse_mountinfo(
                "35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
            )
            .unwrap(),
        );
        assert_eq!(
            choose(&found, Some("hugetlb\n")).unwrap_err(),
            "the memory controller is neither in the cgroup v2 hierarchy (/sys/fs/cgroup/unified/cgroup.controllers offers `hugetlb`) nor in a mounted cgroup v1 hierarchy"
        );
        assert_eq!(
            choose(&Discovered::default(), None).unwrap_err(),
            "no cgroup file system with the memory controller is mounted"
        );
    }

    #[test]
    fn mount_points_with_spaces_and_bad_lines() {
        let mounts =
            parse_mountinfo("1 2 0:3 / /mnt/with\\040space rw - cgroup2 none rw\n").unwrap();
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt/with space"));
        assert!(parse_mountinfo("1 2 3\n").is_err());
        assert!(parse_proc_cgroup("x:memory:/\n").is_err());
        assert!(parse_proc_cgroup("1:memory:relative\n").is_err());
    }
}
