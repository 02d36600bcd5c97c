//! The PSI parser: `/proc/pressure/{cpu,memory,io}` and a cgroup's `*.pressure` files.

use ballast_core::{PsiLine, PsiReading};

use super::{ParseError, Problem, error, parse_f64, parse_u64, unexpected};

/// Parses a PSI file:
///
/// ```text
/// some avg10=0.12 avg60=0.05 avg300=0.01 total=123456
/// full avg10=0.00 avg60=0.00 avg300=0.00 total=0
/// ```
///
/// `some` is required and `full` optional (older kernels have none for `cpu`). Each line needs
/// exactly the four fields, in any order; averages are percentages in `0..=100`.
pub fn parse_psi(file: &str, text: &str) -> Result<PsiReading, ParseError> {
    let mut some = None;
    let mut full = None;
    let mut any_line = false;
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        any_line = true;
        let mut words = line.split_ascii_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => {
                return Err(unexpected(
                    file,
                    n,
                    "a line starting with `some` or `full`",
                    line,
                ));
            }
        };
        if slot.is_some() {
            let what = if line.starts_with("some") {
                "some"
            } else {
                "full"
            };
            return Err(error(file, Problem::Duplicate { line: n, what }));
        }
        *slot = Some(parse_line(file, n, words)?);
    }
    if !any_line {
        return Err(error(file, Problem::Empty));
    }
    let some = some.ok_or_else(|| error(file, Problem::Missing("the `some` line")))?;
    Ok(PsiReading { some, full })
}

fn parse_line<'a>(
    file: &str,
    n: usize,
    fields: impl Iterator<Item = &'a str>,
) -> Result<PsiLine, ParseError> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            return Err(unexpected(file, n, "`key=value`", field));
        };
        match key {
            "avg10" => set_avg(file, n, &mut avg10, "avg10", value)?,
            "avg60" => set_avg(file, n, &mut avg60, "avg60", value)?,
            "avg300" => set_avg(file, n, &mut avg300, "avg300", value)?,
            "total" => {
                if total.is_some() {
                    return Err(error(
                        file,
                        Problem::Duplicate {
                            line: n,
                            what: "total",
                        },
                    ));
                }
                total = Some(parse_u64(file, n, "total", value)?);
            }
            _ => return Err(unexpected(file, n, "avg10, avg60, avg300 or total", field)),
        }
    }
    Ok(PsiLine {
        avg10: avg10.ok_or_else(|| error(file, Problem::Missing("avg10")))?,
        avg60: avg60.ok_or_else(|| error(file, Problem::Missing("avg60")))?,
        avg300: avg300.ok_or_else(|| error(file, Problem::Missing("avg300")))?,
        total_us: total.ok_or_else(|| error(file, Problem::Missing("total")))?,
    })
}

fn set_avg(
    file: &str,
    n: usize,
    slot: &mut Option<f64>,
    field: &'static str,
    value: &str,
) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(error(
            file,
            Problem::Duplicate {
                line: n,
                what: field,
            },
        ));
    }
    let v = parse_f64(file, n, field, value)?;
    if v > 100.0 {
        return Err(super::bad_number(file, n, field, value));
    }
    *slot = Some(v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(text: &str, expect: Expect) {
        let actual = match parse_psi("memory", text) {
            Ok(r) => format!("{r:?}"),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&actual);
    }

    #[test]
    fn parses_some_and_full() {
        check(
            "some avg10=2.24 avg60=1.41 avg300=1.20 total=7152181\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            expect![[
                r#"PsiReading { some: PsiLine { avg10: 2.24, avg60: 1.41, avg300: 1.2, total_us: 7152181 }, full: Some(PsiLine { avg10: 0.0, avg60: 0.0, avg300: 0.0, total_us: 0 }) }"#
            ]],
        );
        check(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
            expect![[
                r#"PsiReading { some: PsiLine { avg10: 0.0, avg60: 0.0, avg300: 0.0, total_us: 5 }, full: None }"#
            ]],
        );
    }

    #[test]
    fn rejects_malformed_files_naming_the_problem() {
        check("", expect!["error: memory: the file is empty"]);
        check(
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0",
            expect!["error: memory: missing the `some` line"],
        );
        check(
            "some avg10=0.00 avg60=0.00 total=0",
            expect!["error: memory: missing avg300"],
        );
        check(
            "some avg10=abc avg60=0.00 avg300=0.00 total=0",
            expect!["error: memory: line 1: `avg10` is not a valid number: `abc`"],
        );
        check(
            "some avg10=-1 avg60=0.00 avg300=0.00 total=0",
            expect!["error: memory: line 1: `avg10` is not a valid number: `-1`"],
        );
        check(
            "some avg10=0 avg60=0 avg300=0 total=0\nsome avg10=0 avg60=0 avg300=0 total=0",
            expect!["error: memory: line 2: `some` appears twice"],
        );
        check(
            "partial avg10=0",
            expect![
                "error: memory: line 1: expected a line starting with `some` or `full`, found `partial avg10=0`"
            ],
        );
        check(
            "some avg10 avg60=0 avg300=0 total=0",
            expect!["error: memory: line 1: expected `key=value`, found `avg10`"],
        );
    }
}
