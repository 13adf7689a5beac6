//! What the listing commands (`berth ps`, `berth services`) print with: aligned columns and
//! short names.

use std::io::Write;

/// The last part of an ARN (`…/web` → `web`).
pub(crate) fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Print rows as left-aligned columns (the first row is the header), like `docker ps`.
pub(crate) fn print_table<R: AsRef<[String]>>(rows: &[R]) -> anyhow::Result<()> {
    let n = rows.first().map(|r| r.as_ref().len()).unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r.as_ref()[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = std::io::stdout().lock();
    for r in rows {
        let line: Vec<String> = r
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
