//! A small harness for test files of machine-level scenarios
//! (`harness = false` in Cargo.toml), for what libtest cannot do: print a
//! table of the results, scenario by column (a boot path, say), once every
//! case has run.
//!
//! Cases run on worker threads as libtest's tests do, and each is timed and
//! reported as it ends. The command line is libtest's as far as it matters
//! here ([`Args`]), so `cargo test -p … --test FILE -- FILTER` works.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// One case: a scenario (a row of the table) in one column.
pub struct Case<'a> {
    pub row: &'static str,
    pub column: &'static str,
    pub run: Box<dyn Fn() -> Result<()> + Send + Sync + 'a>,
}

impl Case<'_> {
    /// `column/row`, what filters match.
    pub fn name(&self) -> String {
        format!("{}/{}", self.column, self.row)
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub row: &'static str,
    pub column: &'static str,
    /// The error chain or the panic message.
    pub result: Result<(), String>,
    pub duration: Duration,
}

/// The command line, as far as this harness honours libtest's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub filters: Vec<String>,
    pub skip: Vec<String>,
    pub exact: bool,
    pub list: bool,
    /// `--ignored`: no case here is ignored, so none runs.
    pub ignored_only: bool,
    pub threads: Option<usize>,
}

impl Args {
    /// Parses libtest's arguments: filters, `--exact`, `--skip F`,
    /// `--list`, `--ignored`, `--test-threads N` (or `=N`). Other options
    /// are accepted and ignored, with the values of those that take one.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args> {
        let mut parsed = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
                _ => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .map(str::to_owned)
                    .or_else(|| args.next())
                    .ok_or_else(|| anyhow!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--list" => parsed.list = true,
                "--exact" => parsed.exact = true,
                "--ignored" => parsed.ignored_only = true,
                "--skip" => parsed.skip.push(value()?),
                "--test-threads" => {
                    let threads = value()?;
                    parsed.threads =
                        Some(threads.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                            anyhow!("--test-threads {threads:?}: not a positive count")
                        })?);
                }
                "--format" | "--color" | "--logfile" | "-Z" | "--shuffle-seed" => {
                    value()?;
                }
                other if other.starts_with('-') => {}
                _ => parsed.filters.push(arg),
            }
        }
        Ok(parsed)
    }

    /// Whether the case called `name` runs.
    pub fn selects(&self, name: &str) -> bool {
        let matches = |filter: &String| {
            if self.exact {
                name == filter
            } else {
                name.contains(filter.as_str())
            }
        };
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(matches)
    }
}

/// Runs the selected `cases` as the process's command line says, prints
/// the table, and exits with [`run_cases`]' code.
pub fn main(cases: Vec<Case<'_>>, prepare: &(dyn Fn() + Sync)) -> ! {
    std::process::exit(run_cases(cases, prepare))
}

/// Runs the selected `cases` as the process's command line says and prints
/// the table; the process's exit code: 101 if a case failed (as libtest
/// does), 2 on a bad command line. `prepare` runs before each case and is
/// not part of its time: the first case to call it builds what all share,
/// which the caller drops before it exits.
pub fn run_cases(cases: Vec<Case<'_>>, prepare: &(dyn Fn() + Sync)) -> i32 {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("error: {err}");
            return 2;
        }
    };
    let cases: Vec<Case<'_>> = cases
        .into_iter()
        .filter(|case| args.selects(&case.name()))
        .collect();
    if args.list {
        for case in &cases {
            println!("{}: test", case.name());
        }
        return 0;
    }
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
        .unwrap_or(1);
    println!("running {} cases on {threads} threads", cases.len());
    let (rows, columns) = rows_and_columns(&cases);
    let started = Instant::now();
    let outcomes = run(cases, threads, prepare);
    print!("{}", summary(&rows, &columns, &outcomes, started.elapsed()));
    let failed = outcomes.iter().any(|outcome| outcome.result.is_err());
    if failed {
        101
    } else {
        0
    }
}

/// Rows and columns in the order the cases first name them.
fn rows_and_columns(cases: &[Case<'_>]) -> (Vec<&'static str>, Vec<&'static str>) {
    let (mut rows, mut columns) = (Vec::new(), Vec::new());
    for case in cases {
        if !rows.contains(&case.row) {
            rows.push(case.row);
        }
        if !columns.contains(&case.column) {
            columns.push(case.column);
        }
    }
    (rows, columns)
}

/// Runs `cases` in order on `threads` workers; each outcome is printed as
/// the case ends. A panic fails its case, not the run.
pub fn run(cases: Vec<Case<'_>>, threads: usize, prepare: &(dyn Fn() + Sync)) -> Vec<Outcome> {
    let workers = threads.clamp(1, cases.len().max(1));
    let queue = Mutex::new(VecDeque::from(cases));
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some(case) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                prepare();
                let outcome = run_case(&case);
                outcomes.lock().unwrap().push(outcome);
            });
        }
    });
    outcomes.into_inner().unwrap()
}

fn run_case(case: &Case<'_>) -> Outcome {
    let name = case.name();
    println!("{name}: started");
    let started = Instant::now();
    let result = match panic::catch_unwind(AssertUnwindSafe(|| (case.run)())) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("{err:#}")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".to_owned())),
    };
    let duration = started.elapsed();
    match &result {
        Ok(()) => println!("{name}: ok in {:.1} s", duration.as_secs_f64()),
        Err(err) => println!(
            "{name}: FAILED after {:.1} s:\n{err}",
            duration.as_secs_f64()
        ),
    }
    Outcome {
        row: case.row,
        column: case.column,
        result,
        duration,
    }
}

/// The table: a row per scenario that ran, a column each, every cell
/// pass/FAIL with the duration ("-": not run); then the counts, the wall
/// time and the failed cases' names.
pub fn summary(rows: &[&str], columns: &[&str], outcomes: &[Outcome], wall: Duration) -> String {
    let first = rows.iter().map(|row| row.len()).max().unwrap_or(0).max(8) + 2;
    let width = columns
        .iter()
        .map(|column| column.len())
        .max()
        .unwrap_or(0)
        .max(16)
        + 2;
    let mut header = format!("{:first$}", "scenario");
    for column in columns {
        let _ = write!(header, "{column:width$}");
    }
    let mut table = format!("\n{}\n", header.trim_end());
    for row in rows {
        let mut line = format!("{row:first$}");
        for column in columns {
            let cell = match outcomes
                .iter()
                .find(|outcome| outcome.row == *row && outcome.column == *column)
            {
                Some(outcome) => format!(
                    "{} {:6.1} s",
                    if outcome.result.is_ok() {
                        "pass"
                    } else {
                        "FAIL"
                    },
                    outcome.duration.as_secs_f64()
                ),
                None => "-".to_owned(),
            };
            let _ = write!(line, "{cell:width$}");
        }
        table.push_str(line.trim_end());
        table.push('\n');
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let _ = writeln!(
        table,
        "\n{} passed, {} failed; wall time {:.1} s",
        outcomes.len() - failed.len(),
        failed.len(),
        wall.as_secs_f64()
    );
    for outcome in failed {
        let _ = writeln!(table, "  failed: {}/{}", outcome.column, outcome.row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args> {
        Args::parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_libtest_arguments() {
        let parsed = args(
            "grub --nocapture --skip ovmf/boots --test-threads 3 --format=terse --color never seabios",
        )
        .unwrap();
        assert_eq!(
            parsed,
            Args {
                filters: vec!["grub".into(), "seabios".into()],
                skip: vec!["ovmf/boots".into()],
                threads: Some(3),
                ..Args::default()
            }
        );
        let parsed = args("--test-threads=1 --exact --list --ignored").unwrap();
        assert_eq!(parsed.threads, Some(1));
        assert!(parsed.exact && parsed.list && parsed.ignored_only);
    }

    #[test]
    fn rejects_bad_thread_counts_and_missing_values() {
        for (line, expected) in [
            (
                "--test-threads 0",
                "--test-threads \"0\": not a positive count",
            ),
            (
                "--test-threads=x",
                "--test-threads \"x\": not a positive count",
            ),
            ("--test-threads", "--test-threads needs a value"),
            ("--skip", "--skip needs a value"),
        ] {
            assert_eq!(args(line).unwrap_err().to_string(), expected, "{line}");
        }
    }

    #[test]
    fn filters_select_by_substring_or_exactly_and_skip_wins() {
        let parsed = args("grub --skip ovmf").unwrap();
        assert!(parsed.selects("grub-seabios/boots-a"));
        assert!(!parsed.selects("grub-ovmf/boots-a"));
        assert!(!parsed.selects("systemd-boot-ovmf/boots-a"));
        let exact = args("--exact grub-ovmf/boots-a").unwrap();
        assert!(exact.selects("grub-ovmf/boots-a"));
        assert!(!exact.selects("grub-ovmf/boots-a-again"));
        assert!(args("").unwrap().selects("anything"));
        assert!(!args("--ignored").unwrap().selects("anything"));
    }

    /// Every case runs once whatever the thread count, a panic or an error
    /// fails only its own case with its message, and `prepare` runs before
    /// each.
    #[test]
    fn runs_every_case_and_catches_failures() {
        let prepared = Mutex::new(0);
        let case = |row: &'static str, outcome: fn() -> Result<()>| Case {
            row,
            column: "c",
            run: Box::new(outcome),
        };
        let outcomes = run(
            vec![
                case("ok", || Ok(())),
                case("error", || {
                    Err(anyhow!("broken")).map_err(|e| e.context("while testing"))
                }),
                case("panic", || panic!("boom")),
            ],
            4,
            &|| *prepared.lock().unwrap() += 1,
        );
        assert_eq!(*prepared.lock().unwrap(), 3);
        let result = |row: &str| {
            outcomes
                .iter()
                .find(|outcome| outcome.row == row)
                .unwrap()
                .result
                .clone()
        };
        assert_eq!(result("ok"), Ok(()));
        assert_eq!(result("error"), Err("while testing: broken".to_owned()));
        assert_eq!(result("panic"), Err("boom".to_owned()));
    }

    #[test]
    fn summary_has_a_cell_per_case_and_names_the_failures() {
        let outcome = |row, column, passed: bool, seconds| Outcome {
            row,
            column,
            result: if passed { Ok(()) } else { Err("no".into()) },
            duration: Duration::from_secs_f64(seconds),
        };
        let table = summary(
            &["boots-a", "falls-back"],
            &["grub-seabios", "systemd-boot-ovmf"],
            &[
                outcome("boots-a", "grub-seabios", true, 9.84),
                outcome("boots-a", "systemd-boot-ovmf", false, 120.0),
                outcome("falls-back", "grub-seabios", true, 51.0),
            ],
            Duration::from_secs(130),
        );
        let expected = "
scenario    grub-seabios       systemd-boot-ovmf
boots-a     pass    9.8 s      FAIL  120.0 s
falls-back  pass   51.0 s      -

2 passed, 1 failed; wall time 130.0 s
  failed: systemd-boot-ovmf/boots-a
";
        assert_eq!(table, expected);
    }
}
