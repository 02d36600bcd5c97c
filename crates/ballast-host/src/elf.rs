//! Checks a plugin file before `dlopen` sees it: is it a 64-bit ELF shared object, and does the
//! file hold every byte its headers promise?
//!
//! `dlopen` of a truncated library can map pages past the end of the file and kill the daemon with
//! SIGBUS when they are touched, and its errors for non-libraries are terse. These checks turn both
//! into clear errors first.

use std::fmt;

/// Why a file is not a loadable shared object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfProblem {
    /// The file does not start with the ELF magic.
    NotElf,
    /// The file is ELF but not a 64-bit little-endian one (this host's format).
    WrongClass,
    /// The file is ELF but not a shared object (e.g. an executable or an object file).
    NotShared {
        /// The ELF `e_type`.
        e_type: u16,
    },
    /// The file is shorter than its headers say.
    Truncated {
        /// The file's size.
        size: u64,
        /// The size the headers need at least.
        needed: u64,
    },
}

impl fmt::Display for ElfProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfProblem::NotElf => f.write_str("not a shared object (no ELF header)"),
            ElfProblem::WrongClass => f.write_str("not a 64-bit little-endian ELF shared object"),
            ElfProblem::NotShared { e_type } => {
                let kind = match e_type {
                    1 => "a relocatable object file",
                    2 => "an executable",
                    4 => "a core dump",
                    _ => "not a shared object",
                };
                write!(
                    f,
                    "an ELF file but {kind} (e_type {e_type}), not a shared library"
                )
            }
            ElfProblem::Truncated { size, needed } => {
                write!(
                    f,
                    "truncated: the file has {size} bytes but its ELF headers describe at least {needed}"
                )
            }
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Checks `bytes` (the whole file) as a 64-bit little-endian ELF shared object whose program
/// headers, loadable segments and section headers all lie within the file.
pub fn check_shared_object(bytes: &[u8]) -> Result<(), ElfProblem> {
    check(bytes.len() as u64, |offset, len| {
        let start = usize::try_from(offset).ok()?;
        bytes
            .get(start..start.checked_add(len)?)
            .map(<[u8]>::to_vec)
    })
}

/// Like [`check_shared_object`], reading only the headers from `file` (of `size` bytes) instead
/// of the whole file.
pub(crate) fn check_shared_object_file(file: &std::fs::File, size: u64) -> Result<(), ElfProblem> {
    use std::os::unix::fs::FileExt;
    check(size, |offset, len| {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset).ok().map(|()| buf)
    })
}

/// The checks, over a file of `size` bytes read through `read(offset, len)`, which returns `None`
/// when the range is not in the file.
fn check(size: u64, read: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Result<(), ElfProblem> {
    const HEADER: u64 = 64;
    let truncated = |needed: u64| ElfProblem::Truncated { size, needed };
    let magic = read(0, 4).ok_or(ElfProblem::NotElf)?;
    if magic != b"\x7fELF" {
        return Err(ElfProblem::NotElf);
    }
    let header = read(0, HEADER as usize).ok_or(truncated(HEADER))?;
    // EI_CLASS 2 = 64-bit, EI_DATA 1 = little-endian.
    if header[4] != 2 || header[5] != 1 {
        return Err(ElfProblem::WrongClass);
    }
    let e_type = u16_at(&header, 16).ok_or(truncated(HEADER))?;
    if e_type != 3 {
        return Err(ElfProblem::NotShared { e_type });
    }
    let e_phoff = u64_at(&header, 32).ok_or(truncated(HEADER))?;
    let e_shoff = u64_at(&header, 40).ok_or(truncated(HEADER))?;
    let e_phentsize = u64::from(u16_at(&header, 54).ok_or(truncated(HEADER))?);
    let e_phnum = u64::from(u16_at(&header, 56).ok_or(truncated(HEADER))?);
    let e_shentsize = u64::from(u16_at(&header, 58).ok_or(truncated(HEADER))?);
    let e_shnum = u64::from(u16_at(&header, 60).ok_or(truncated(HEADER))?);

    let ph_len = e_phnum.saturating_mul(e_phentsize);
    let ph_end = e_phoff.saturating_add(ph_len);
    let sh_end = if e_shnum == 0 {
        0
    } else {
        e_shoff.saturating_add(e_shnum.saturating_mul(e_shentsize))
    };
    let mut needed = ph_end.max(sh_end);
    if needed > size {
        return Err(truncated(needed));
    }
    if e_phentsize < 56 && e_phnum > 0 {
        return Err(ElfProblem::WrongClass);
    }
    let phdrs = read(
        e_phoff,
        usize::try_from(ph_len).map_err(|_| truncated(ph_end))?,
    )
    .ok_or(truncated(ph_end))?;
    // Every loadable segment's file bytes must be present: mapping past the end of the file is
    // what turns a truncated library into SIGBUS.
    for i in 0..e_phnum {
        let at = usize::try_from(i * e_phentsize).map_err(|_| truncated(ph_end))?;
        let p_type = u32_at(&phdrs, at).ok_or(truncated(ph_end))?;
        if p_type != 1 {
            continue; // Only PT_LOAD segments are mapped from the file.
        }
        let p_offset = u64_at(&phdrs, at + 8).ok_or(truncated(ph_end))?;
        let p_filesz = u64_at(&phdrs, at + 32).ok_or(truncated(ph_end))?;
        needed = needed.max(p_offset.saturating_add(p_filesz));
    }
    if needed > size {
        return Err(truncated(needed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_library() -> Vec<u8> {
        // The C library this test binary links is a real shared object on any Linux host.
        let candidates = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
            "/usr/lib/libc.so.6",
        ];
        candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .expect("a libc.so.6 on this Linux host")
    }

    #[test]
    fn a_real_shared_object_passes() {
        assert_eq!(check_shared_object(&own_library()), Ok(()));
    }

    #[test]
    fn the_file_reader_agrees_with_the_slice_reader() {
        let lib = own_library();
        let dir = tempfile::tempdir().unwrap();
        for cut in [lib.len(), lib.len() / 2, 100] {
            let path = dir.path().join(format!("lib{cut}.so"));
            std::fs::write(&path, &lib[..cut]).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            assert_eq!(
                check_shared_object_file(&file, cut as u64),
                check_shared_object(&lib[..cut]),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn text_is_not_elf() {
        assert_eq!(
            check_shared_object(b"#!/bin/sh\necho hi\n"),
            Err(ElfProblem::NotElf)
        );
        assert_eq!(check_shared_object(b""), Err(ElfProblem::NotElf));
        assert!(matches!(
            check_shared_object(b"\x7fELF\x02\x01"),
            Err(ElfProblem::Truncated { .. })
        ));
    }

    #[test]
    fn truncation_anywhere_is_caught() {
        let lib = own_library();
        for cut in [10, 63, 64, 200, lib.len() / 2, lib.len() - 1] {
            let result = check_shared_object(&lib[..cut]);
            assert!(
                matches!(result, Err(ElfProblem::Truncated { .. })),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn an_executable_is_not_a_library() {
        let mut lib = own_library();
        lib[16] = 2;
        let problem = check_shared_object(&lib).unwrap_err();
        assert_eq!(problem, ElfProblem::NotShared { e_type: 2 });
        assert!(problem.to_string().contains("an executable"));
    }
}
