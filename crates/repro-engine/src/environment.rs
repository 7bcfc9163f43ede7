//! The machine a stage ran on, recorded with every run: operating system and kernel, CPU model
//! and the instruction-set extensions that change float results (a BLAS picks its kernels by
//! them: FMA contracts `a*b+c` into one rounding, AVX-512 sums in another order), thread
//! counts, GPU model and driver, repro's own version and build, and whatever the program that
//! embeds the engine adds (its science: libtorch, CUDA, cuDNN — see [`contribute`]).
//!
//! It is captured once per process, and only when a stage has run (the run cache's record and
//! the trace ask for it): a run that finds every stage fresh reads no `/proc` file and starts
//! no `nvidia-smi`. None of it enters a stage key — it describes where a result was made, so
//! that two results that differ can be told apart by where they ran (`exp show --json`).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning.
const FORMAT: u32 = 1;

/// What the embedding program adds (name → value), asked once, when the environment is
/// first captured.
pub type Facts = fn() -> BTreeMap<String, String>;

static FACTS: OnceLock<Facts> = OnceLock::new();

/// Let the program that embeds the engine add its own facts (library versions the engine
/// cannot know of). The first call wins; call it at start-up.
pub fn contribute(facts: Facts) {
    let _ = FACTS.set(facts);
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Environment {
    #[serde(default)]
    pub format: u32,
    /// `PRETTY_NAME` of `/etc/os-release`.
    #[serde(default)]
    pub os: String,
    /// `uname -r`.
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub arch: String,
    /// The CPU's model name.
    #[serde(default)]
    pub cpu: String,
    /// The float-relevant instruction-set extensions the CPU has (sorted).
    #[serde(default)]
    pub cpu_flags: Vec<String>,
    /// CPUs this process may use.
    #[serde(default)]
    pub cpus: usize,
    /// The thread-count variables of repro's environment (`OMP_NUM_THREADS` and kin) as
    /// set; a stage's own `OMP_NUM_THREADS` is its `resources: cpus`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub threads: BTreeMap<String, String>,
    /// Each GPU `nvidia-smi` lists: model, driver version, memory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// repro's version, and the build it is (GNU build id; `REPRO_GIT_COMMIT` when the build
    /// set it).
    #[serde(default)]
    pub repro: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build: String,
    /// What the embedding program contributed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl Environment {
    /// A short stable id of this environment (for trace lines, which name it rather than
    /// repeat it).
    pub(crate) fn id(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&json).to_hex()[..16].to_string()
    }

    /// The differences from `other`, one line each (`cpu_flags: -avx512f`).
    pub(crate) fn diff(&self, other: &Environment) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(other).unwrap_or_default(),
        );
        let mut out = Vec::new();
        let empty = serde_json::Map::new();
        let (a, b) = (
            a.as_object().unwrap_or(&empty),
            b.as_object().unwrap_or(&empty),
        );
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let (x, y) = (a.get(k), b.get(k));
            if x == y {
                continue;
            }
            if k == "cpu_flags" {
                let set = |v: Option<&serde_json::Value>| -> Vec<String> {
                    v.and_then(|v| serde_json::from_value(v.clone()).ok())
                        .unwrap_or_default()
                };
                let (xs, ys) = (set(x), set(y));
                let mut d: Vec<String> = ys
                    .iter()
                    .filter(|f| !xs.contains(f))
                    .map(|f| format!("-{f}"))
                    .collect();
                d.extend(
                    xs.iter()
                        .filter(|f| !ys.contains(f))
                        .map(|f| format!("+{f}")),
                );
                out.push(format!("cpu_flags: {}", d.join(" ")));
            } else {
                let show = |v: Option<&serde_json::Value>| {
                    v.map_or("(none)".to_string(), |v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                };
                out.push(format!("{k}: {} (was {})", show(x), show(y)));
            }
        }
        out
    }
}

/// This machine's environment, captured on first use.
pub(crate) fn current() -> &'static Environment {
    static ENV: OnceLock<Environment> = OnceLock::new();
    ENV.get_or_init(capture)
}

/// The instruction-set extensions that change what float code computes or how fast: the
/// vector widths a BLAS or libtorch dispatches on, fused multiply-add, half and bfloat16
/// conversions and arithmetic, matrix units.
const FLOAT_FLAGS: &[&str] = &[
    // x86
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512cd",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    // arm64
    "asimd",
    "fphp",
    "asimdhp",
    "asimddp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
];

const THREAD_VARS: &[&str] = &[
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "RAYON_NUM_THREADS",
];

fn capture() -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let (cpu, cpu_flags) = parse_cpuinfo(&cpuinfo);
    let build = crate::state::plan_cache::build_id()
        .map(|id| format!("build-id {}", hex::encode(id)))
        .unwrap_or_default();
    Environment {
        format: FORMAT,
        os: os_release(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
        kernel: kernel(),
        arch: std::env::consts::ARCH.to_string(),
        cpu,
        cpu_flags,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        threads: THREAD_VARS
            .iter()
            .filter_map(|v| Some((v.to_string(), std::env::var(v).ok()?)))
            .collect(),
        gpus: nvidia_gpus(),
        repro: match option_env!("REPRO_GIT_COMMIT") {
            Some(c) => format!("{} ({c})", env!("CARGO_PKG_VERSION")),
            None => env!("CARGO_PKG_VERSION").to_string(),
        },
        build,
        extra: FACTS.get().map(|f| f()).unwrap_or_default(),
    }
}

/// The CPU model and its float-relevant flags, from `/proc/cpuinfo` (x86: `model name` and
/// `flags`; arm64: `Features`, and no model name).
fn parse_cpuinfo(text: &str) -> (String, Vec<String>) {
    let mut model = String::new();
    let mut flags: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if model.is_empty() && (k == "model name" || k == "Hardware" || k == "cpu model") {
            model = v.to_string();
        }
        if flags.is_empty() && (k == "flags" || k == "Features") {
            flags = v
                .split_whitespace()
                .filter(|f| FLOAT_FLAGS.contains(f))
                .map(String::from)
                .collect();
        }
        if !model.is_empty() && !flags.is_empty() {
            break;
        }
    }
    flags.sort();
    flags.dedup();
    (model, flags)
}

fn os_release(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

fn kernel() -> String {
    // SAFETY: uname fills the struct it is given; the fields are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// Each GPU as `model, driver, memory`, from `nvidia-smi` when it is on `PATH`, waited for
/// at most a few seconds (a wedged driver must not hold the run).
fn nvidia_gpus() -> Vec<String> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nvidia-smi").is_file()));
    if !on_path {
        return Vec::new();
    }
    let Ok(mut child) = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Vec::new();
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => break,
            Ok(None) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Vec::new();
            }
        }
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut o, &mut out);
    }
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The environment a stage ran in, as stored with its run-cache record and named by its
/// trace line: the machine's, with the stage's own thread count.
pub(crate) fn of_stage(stage: &crate::spec::Stage) -> serde_json::Value {
    let mut v = serde_json::to_value(current()).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "stage_threads".into(),
            serde_json::json!(stage.resources.cpus),
        );
    }
    v
}

/// Write this process's environment to `cache/environments/<id>.json` once (the trace's
/// lines name it by id); returns the id. Best effort.
pub(crate) fn save(cache_dir: &std::path::Path) -> String {
    static SAVED: OnceLock<String> = OnceLock::new();
    SAVED
        .get_or_init(|| {
            let env = current();
            let id = env.id();
            let path = cache_dir.join("environments").join(format!("{id}.json"));
            if !path.exists() {
                let _ = std::fs::create_dir_all(path.parent().expect("has parent"));
                if let Ok(json) = serde_json::to_vec_pretty(env) {
                    let _ = crate::fsutil::write_atomic_unsynced(&path, &json);
                }
            }
            id
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_gives_the_model_and_only_float_relevant_flags() {
        let x86 = "processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\n\
                   flags\t\t: fpu vme sse4_2 avx2 fma f16c avx512f avx512_bf16 hypervisor\n\
                   processor\t: 1\nflags\t\t: fpu\n";
        let (m, f) = parse_cpuinfo(x86);
        assert_eq!(m, "AMD EPYC 9654 96-Core Processor");
        assert_eq!(
            f,
            ["avx2", "avx512_bf16", "avx512f", "f16c", "fma", "sse4_2"]
        );
        let arm = "processor\t: 0\nFeatures\t: fp asimd fphp asimdhp sve bf16 cpuid\n";
        let (m, f) = parse_cpuinfo(arm);
        assert_eq!(m, "");
        assert_eq!(f, ["asimd", "asimdhp", "bf16", "fphp", "sve"]);
    }

    #[test]
    fn os_release_and_the_running_machine() {
        assert_eq!(
            os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        let e = current();
        assert_eq!(e.format, FORMAT);
        assert!(!e.kernel.is_empty() && e.cpus > 0, "{e:?}");
        assert!(e.repro.starts_with(env!("CARGO_PKG_VERSION")));
        // The id is stable for the same environment and changes with it.
        let mut other = e.clone();
        assert_eq!(other.id(), e.id());
        other.cpu_flags.retain(|f| f != "avx512f");
        other.cpu_flags.push("avx512f".into());
        other.cpu_flags.sort();
        other.kernel.push_str("-other");
        assert_ne!(other.id(), e.id());
    }

    #[test]
    fn diff_names_each_difference() {
        let a = Environment {
            cpu: "A".into(),
            cpu_flags: vec!["avx2".into(), "fma".into()],
            ..Default::default()
        };
        let b = Environment {
            cpu: "B".into(),
            cpu_flags: vec!["avx2".into(), "avx512f".into()],
            ..Default::default()
        };
        assert_eq!(
            a.diff(&b),
            vec![
                "cpu: A (was B)".to_string(),
                "cpu_flags: -avx512f +fma".into()
            ]
        );
        assert!(a.diff(&a).is_empty());
    }
}
