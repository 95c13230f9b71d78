//! Reading `results.json` and writing a run directory's report files atomically: each file is
//! written to a temporary name in the same directory, synced, then renamed over the target, so a
//! reader never sees half a report.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::{ReportPaths, Results, figures, html, markdown, paths_in};
use crate::io::write_atomic;

/// Writes `results.json`, one standalone SVG per figure, `report.md` and `report.html` into `dir`
/// (created if missing). Fails with `InvalidData` before writing anything if the results do not
/// validate (a rate outside 0..1, a NaN), since such a `results.json` would not read back.
pub fn write_report(dir: &Path, results: &Results) -> io::Result<ReportPaths> {
    results
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("results are not reportable: {e}")))?;
    let figures = figures::all(results).map_err(|e| io::Error::other(format!("plotting failed: {e}")))?;
    fs::create_dir_all(dir)?;
    let mut paths = paths_in(dir);
    let json = serde_json::to_string_pretty(results).map_err(io::Error::other)?;
    write_atomic(&paths.results_json, json.as_bytes())?;
    for f in &figures {
        let path = dir.join(&f.file);
        write_atomic(&path, f.svg.as_bytes())?;
        paths.svgs.push(path);
    }
    write_atomic(&paths.markdown, markdown::render(results, &figures).as_bytes())?;
    write_atomic(&paths.html, html::render(results, &figures).as_bytes())?;
    Ok(paths)
}

/// Reads `results.json` from a run directory (or from the file itself if `path` is one).
pub fn read_results(path: &Path) -> io::Result<Results> {
    let file = if path.is_dir() { path.join("results.json") } else { path.to_path_buf() };
    let text = fs::read_to_string(&file).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a results file: {e}", file.display())))
}

/// Curve points as written by `serde_json`, which turns a non-finite y into `null`: read it back as
/// NaN instead of failing.
pub(crate) fn points_with_nulls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
    let points: Vec<(f64, Option<f64>)> = Vec::deserialize(d)?;
    Ok(points.into_iter().map(|(x, y)| (x, y.unwrap_or(f64::NAN))).collect())
}
