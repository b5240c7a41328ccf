//! `gatehouse evidence`: loads the configuration and the store, has `gatehouse_ops::evidence`
//! build and render the report, writes it and says what it found. The report itself (what is
//! counted, how it is rendered) lives in the library, where tests build it from a store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use gatehouse_ops::evidence::{self, Format, Period, Status};
use gatehouse_store::SqliteStore;

/// Writes the report; exit 0, or 1 when the chain did not verify (the report is written either
/// way and says why).
pub fn run(
    config: &Path,
    from: &str,
    to: &str,
    output: &Path,
    format: Option<&str>,
) -> Result<ExitCode> {
    let format = Format::choose(format, output)?;
    let period = Period::parse(from, to)?;
    let cfg = crate::commands::load(config)?;
    let store = SqliteStore::open_existing(&cfg.store.url).map_err(|e| anyhow!("{e}"))?;
    let report = evidence::build(&cfg, config, &store, period)?;
    let text = evidence::render(&report, format)?;
    evidence::write_atomically(output, text.as_bytes())?;
    let attention = report
        .summary
        .iter()
        .filter(|r| r.status == Status::Attention)
        .count();
    println!(
        "wrote {} ({}): {} records in the period, {} of {} requirements need attention, chain {}",
        output.display(),
        format.name(),
        report.report.records_in_period,
        attention,
        report.summary.len(),
        if report.integrity.verified {
            "verified"
        } else {
            "NOT verified"
        }
    );
    Ok(if report.integrity.verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
