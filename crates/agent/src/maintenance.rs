//! The node's housekeeping: container logs rotated when they grow too big and removed once
//! their container has ended and retention has passed ([`rotate_logs`]), unused images
//! collected every interval. Ages are the agent's clock's: its wall time against the files'
//! modification times.
//!
//! Must not: touch a running container's current log file other than to truncate it after
//! copying.

use berth_model::status::NodeContainerStatus;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::Inner;

/// Rotate container logs that grew too big (copy to `.1`, shifting older copies, then
/// truncate: the shim appends, so writing continues at the new end); remove logs of ended
/// containers whose last write is more than `retention` before `now` (the wall time: it is
/// compared with the files' modification times). Returns how many files were rotated.
pub fn rotate_logs(
    dir: &Path,
    max_size: u64,
    max_files: u32,
    retention: Duration,
    live: &[String],
    now: berth_clock::Timestamp,
) -> usize {
    let mut rotated = 0;
    // Whether a file was last written more than `retention` before `now`.
    let expired = |m: &std::fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|t| {
                now.duration_since(berth_clock::Timestamp::from_unix_duration(t)) > retention
            })
    };
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".log") else {
            // A rotated copy: goes with its container's retention.
            if let Some((base, _)) = name.rsplit_once(".log.")
                && !live.iter().any(|l| l == base)
                && e.metadata().is_ok_and(|m| expired(&m))
            {
                let _ = std::fs::remove_file(&p);
            }
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        if !live.iter().any(|l| l == id) {
            if expired(&meta) {
                let _ = std::fs::remove_file(&p);
            }
            continue;
        }
        if meta.len() <= max_size || max_files < 2 {
            continue;
        }
        for i in (1..max_files - 1).rev() {
            let _ = std::fs::rename(
                dir.join(format!("{id}.log.{i}")),
                dir.join(format!("{id}.log.{}", i + 1)),
            );
        }
        if std::fs::copy(&p, dir.join(format!("{id}.log.1"))).is_ok()
            && std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_len(0))
                .is_ok()
        {
            rotated += 1;
        }
    }
    rotated
}

/// The node's housekeeping: log rotation every 10 s (for a driver that writes log files),
/// image collection every interval.
pub(crate) async fn maintenance(inner: Arc<Inner>) {
    let clock = inner.cfg.clock;
    let mut last_gc = clock.instant();
    // Without log files (a simulated node) only collection needs waking up for.
    let gc = inner.cfg.image_cleanup_interval;
    let period = match inner.driver.log_dir() {
        Some(_) => Duration::from_secs(10).min(gc),
        None => gc,
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Some(dir) = inner.driver.log_dir() {
            let mut live: Vec<String> = Vec::new();
            inner.states.each(|t| {
                live.extend(
                    t.containers
                        .iter()
                        .filter(|c| c.status != NodeContainerStatus::Stopped)
                        .map(|c| c.runtime_id.clone()),
                )
            });
            let (max, files, keep) = (
                inner.cfg.log_max_size,
                inner.cfg.log_max_files,
                inner.cfg.log_retention,
            );
            let now = clock.now();
            let _ = tokio::task::spawn_blocking(move || {
                rotate_logs(&dir, max, files, keep, &live, now)
            })
            .await;
        }
        if clock.elapsed(last_gc) >= inner.cfg.image_cleanup_interval {
            last_gc = clock.instant();
            match inner.images.collect(inner.cfg.image_minimum_age).await {
                Ok(n) if n > 0 => tracing::info!(images = n, "unused images removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!("image collection: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_and_expire() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t-c.log");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        std::fs::write(d.path().join("t-old.log"), b"gone").unwrap();
        let live = vec!["t-c".to_string()];
        // The time given, not the machine's, is what log ages are measured against.
        let written = std::fs::metadata(d.path().join("t-old.log"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let now = berth_clock::Timestamp::from_unix_duration(written);
        let hour = Duration::from_secs(3600);
        // Under the limit: nothing; over it: copied to .1 and truncated.
        assert_eq!(rotate_logs(d.path(), 200, 3, hour, &live, now), 0);
        assert_eq!(rotate_logs(d.path(), 50, 3, hour, &live, now), 1);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        assert_eq!(
            std::fs::read(d.path().join("t-c.log.1")).unwrap().len(),
            100
        );
        std::fs::write(&p, vec![b'y'; 60]).unwrap();
        rotate_logs(d.path(), 50, 3, hour, &live, now);
        assert_eq!(std::fs::read(d.path().join("t-c.log.2")).unwrap()[0], b'x');
        assert_eq!(std::fs::read(d.path().join("t-c.log.1")).unwrap()[0], b'y');
        std::fs::write(&p, vec![b'z'; 60]).unwrap();
        rotate_logs(d.path(), 50, 3, hour, &live, now);
        // At most 3 files: the oldest copy is replaced.
        assert_eq!(std::fs::read(d.path().join("t-c.log.2")).unwrap()[0], b'y');
        assert!(!d.path().join("t-c.log.3").exists());
        // An ended container's log stays until retention passes.
        rotate_logs(d.path(), 50, 3, hour, &live, now + hour / 2);
        assert!(d.path().join("t-old.log").exists());
        rotate_logs(d.path(), 50, 3, hour, &live, now + hour * 2);
        assert!(!d.path().join("t-old.log").exists());
        assert!(p.exists(), "a live container's log is never removed");
    }
}
