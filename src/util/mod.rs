//! Small shared helpers: where d4s keeps its files, hashing with a cache, atomic writes.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The d4s home: `$D4S_HOME`, else the platform cache dir + `d4s` (e.g. `~/.cache/d4s`).
pub fn d4s_home() -> PathBuf {
    if let Some(h) = std::env::var_os("D4S_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("d4s")
}

/// Creates a directory (and parents), naming it in the error.
/// The current time as RFC 3339 UTC with milliseconds: how journals and run folders stamp events.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file_uncached(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Hex SHA-256 of a file, remembered in `<d4s home>/sha256-cache.json` keyed by the canonical path,
/// size and modification time, so large model files are hashed once.
pub fn sha256_file(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let key = format!("{}|{}|{}", canon.display(), meta.len(), mtime);
    let cache_path = d4s_home().join("sha256-cache.json");
    let mut cache: serde_json::Map<String, serde_json::Value> = fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(h) = cache.get(&key).and_then(|v| v.as_str()) {
        return Ok(h.to_string());
    }
    let h = sha256_file_uncached(path)?;
    cache.insert(key, serde_json::Value::String(h.clone()));
    // The cache is an optimisation: failing to write it (read-only home) must not fail the load.
    if ensure_dir(&d4s_home()).is_ok() {
        let _ = write_atomic(
            &cache_path,
            serde_json::to_vec_pretty(&cache)
                .unwrap_or_default()
                .as_slice(),
        );
    }
    Ok(h)
}

/// Writes a file atomically: to a temporary sibling, fsync, then rename over the target. A crash
/// or a full disk leaves the previous version intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Removes a file; one that is not there is fine.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Memory the OS reports as available, in bytes (Linux `/proc/meminfo`), if known.
pub fn available_memory() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Resident set size of this process in bytes (Linux), if known.
pub fn resident_memory() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// CPU seconds this process has used so far, user plus system, all threads (Linux: fields 14
/// and 15 of `/proc/self/stat`, in the kernel's fixed user-visible 100 ticks per second).
pub fn cpu_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its `)`.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3, so fields 14 and 15 are at 11 and 12.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Peak resident set size of this process in bytes (Linux), if known.
pub fn peak_memory() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Human-readable byte count.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A line for the user above a progress bar, or on stderr when the bar is hidden (output is not
/// a terminal: a log file of a long headless run still records it).
pub fn say(pb: &indicatif::ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}

/// Progress for a log file. A hidden bar (stderr is not a terminal: a long run under `nohup`)
/// draws nothing between the lines given to [`say`], so a log would show no sign of life for
/// hours; a heartbeat lets one plain progress line through at most every `every`.
#[derive(Debug)]
pub struct Heartbeat {
    every: Duration,
    last: Option<Instant>,
}

impl Heartbeat {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether a line is due at `now`: the first call starts the clock, and a line is due once
    /// `every` has passed since the start or the last line.
    pub fn due(&mut self, now: Instant) -> bool {
        let last = *self.last.get_or_insert(now);
        let due = now.saturating_duration_since(last) >= self.every;
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// The time a run has spent editing and the steps it made meanwhile, pauses (evaluation points,
/// checkpoints) left out: its mean rate gives the ETA of a log line. indicatif's own estimate
/// weighs the last steps, which misleads when steps are bursty — a D4S chunk's first step
/// optimizes eight targets and the next seven find theirs — and then reads "16 hours" one minute
/// and "8 hours" the next.
#[derive(Debug, Default)]
pub struct EditingRate {
    last: Option<(Instant, u64)>,
    spent: Duration,
    steps: u64,
}

impl EditingRate {
    /// Notes the position at `now`; the time and steps since the last note count as editing
    /// unless `since_last` says it was a pause.
    pub fn note(&mut self, now: Instant, position: u64, since_last: Activity) {
        if let (Activity::Editing, Some((t, p))) = (since_last, self.last) {
            self.spent += now.saturating_duration_since(t);
            self.steps += position.saturating_sub(p);
        }
        self.last = Some((now, position));
    }

    /// The time `remaining` steps take at the mean rate so far (`None` before the first step).
    pub fn eta(&self, remaining: u64) -> Option<Duration> {
        (self.steps > 0).then(|| self.spent.mul_f64(remaining as f64 / self.steps as f64))
    }
}

/// What a run did between two progress notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Editing,
    Paused,
}

/// The ETA part of a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eta {
    /// Left out: during a pause, such as an evaluation, no rate says anything about the time left.
    Hidden,
    /// No rate yet: `?`.
    Unknown,
    In(Duration),
}

/// One line of a bar's state, for a log: `ROME: 125/1000 edits, 19 minutes elapsed, ETA 2 hours
/// (target)`.
pub fn progress_line(pb: &indicatif::ProgressBar, unit: &str, eta: Eta) -> String {
    use indicatif::HumanDuration;
    let prefix = pb.prefix();
    let prefix = prefix.trim();
    let message = pb.message();
    let eta = match eta {
        Eta::Hidden => String::new(),
        Eta::Unknown => ", ETA ?".to_string(),
        Eta::In(d) => format!(", ETA {}", HumanDuration(d)),
    };
    format!(
        "{}{}/{} {unit}, {} elapsed{eta}{}",
        if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}: ")
        },
        pb.position(),
        pb.length().map_or("?".to_string(), |l| l.to_string()),
        HumanDuration(pb.elapsed()),
        if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_grow_with_work() {
        let Some(before) = cpu_seconds() else {
            return; // not Linux
        };
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = cpu_seconds().unwrap() - before;
        assert!((0.1..30.0).contains(&used), "{used}");
    }

    #[test]
    fn a_heartbeat_lets_one_line_through_per_interval() {
        let mut beat = Heartbeat::new(Duration::from_secs(300));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!beat.due(t0), "the first call only starts the clock");
        assert!(!beat.due(at(299)));
        assert!(beat.due(at(300)));
        assert!(!beat.due(at(301)), "the interval counts from the last line");
        assert!(!beat.due(at(599)));
        assert!(beat.due(at(600)));
        // A call that finds several intervals gone by gives one line, not one per interval.
        assert!(beat.due(at(2000)));
        assert!(!beat.due(at(2001)));
    }

    #[test]
    fn a_progress_line_names_the_run_its_position_and_the_phase() {
        let pb = indicatif::ProgressBar::hidden();
        pb.set_length(1000);
        pb.set_position(125);
        pb.set_prefix("      ROME");
        pb.set_message("target");
        let line = progress_line(&pb, "edits", Eta::In(Duration::from_secs(7200)));
        assert!(line.starts_with("ROME: 125/1000 edits, "), "{line}");
        assert!(line.contains(" elapsed, ETA 2 hours ("), "{line}");
        assert!(line.ends_with(" (target)"), "{line}");
        // No rate yet: the ETA is unknown, not zero; during a pause it is left out.
        let unknown = progress_line(&pb, "edits", Eta::Unknown);
        assert!(unknown.contains(", ETA ? ("), "{unknown}");
        let paused = progress_line(&pb, "edits", Eta::Hidden);
        assert!(
            !paused.contains("ETA") && paused.ends_with(" elapsed (target)"),
            "{paused}"
        );
        let bare = indicatif::ProgressBar::hidden();
        assert!(progress_line(&bare, "edits", Eta::Unknown).starts_with("0/? edits, "));
    }

    #[test]
    fn the_eta_of_bursty_steps_follows_the_mean_rate_without_the_pauses() {
        // Chunks of 8 steps: the first takes 40 s, the next seven 1 s each (47 s per 8 steps).
        let t0 = Instant::now();
        let mut rate = EditingRate::default();
        assert_eq!(rate.eta(100), None, "no step yet");
        rate.note(t0, 0, Activity::Editing);
        let mut t = t0;
        let mut position = 0;
        for chunk in 0..4 {
            if chunk == 2 {
                // An evaluation point of 10 minutes, then editing again.
                rate.note(t, position, Activity::Editing);
                t += Duration::from_secs(600);
                rate.note(t, position, Activity::Paused);
            }
            for step in 0..8 {
                t += Duration::from_secs(if step == 0 { 40 } else { 1 });
                position += 1;
                rate.note(t, position, Activity::Editing);
                // Right after a chunk's slow first step, and after its fast ones, the estimate is
                // the same mean: 47/8 s per step.
                let eta = rate.eta(80).unwrap().as_secs_f64();
                let mean = 80.0 * 47.0 / 8.0;
                let expected = (t - t0).as_secs_f64() - if chunk >= 2 { 600.0 } else { 0.0 };
                let expected = expected / position as f64 * 80.0;
                assert!((eta - expected).abs() < 1e-6, "{eta} vs {expected}");
                if step == 7 {
                    assert!((eta - mean).abs() < 1e-6, "{eta} vs {mean}");
                }
            }
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_into_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("a.json");
        let e = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(e.contains("a.json"), "{e}");
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
