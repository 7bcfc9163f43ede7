//! The environment a stage declares, at key time and at run time: the values of its `env:`
//! variables, the identity of its `tools:` and the digest of its `container:` image enter its
//! fingerprint; its command line is wrapped to set its variables and enter its container.
//!
//! Nothing here runs for a stage that declares none of these, so a pipeline without them keeps
//! its keys and its no-op speed. A tool command's output and an image's digest are computed at
//! most once per process (a `repro run` asks for a stage's key more than once).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::spec::Stage;
use crate::spec::environ::{Container, Tool};
use crate::state::fingerprint::{ContainerId, Fingerprint};
use crate::state::hashing::Hasher;

// Declared in spec (a container's `runtime` is found when the pipeline is read), so that the
// pipeline names nothing of this module; the name here keeps working.
pub(crate) use crate::spec::environ::Runtime;

/// `value` as one POSIX shell word.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:,+@%=".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Variables the engine sets for a stage's process (see `run::make_job`): passed into a
/// container, whose processes do not inherit the host's environment under podman.
const ENGINE_VARS: &[&str] = &[
    "REPRO_STAGE",
    "REPRO_KEY",
    "REPRO_CHECKPOINT",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
];

/// The shell line that runs `cmd` with the variables `set`, in `container` if any. It runs
/// under `sh -c` in the workspace root, so `$PWD` is the workspace: the container sees it at
/// the same path, and works there.
pub(crate) fn command_line(
    cmd: &str,
    set: &BTreeMap<String, String>,
    pass: &[String],
    container: Option<&Container>,
) -> String {
    let Some(c) = container else {
        let mut line = String::new();
        for (k, v) in set {
            line.push_str(&format!("export {k}={}\n", quote(v)));
        }
        line.push_str(cmd);
        return line;
    };
    let mut line = format!("exec {}", c.runtime.program());
    match c.runtime {
        Runtime::Podman => {
            line.push_str(" run --rm -v \"$PWD\":\"$PWD\" -w \"$PWD\"");
            // `--env NAME` passes the host's value, and nothing when it is unset.
            for k in ENGINE_VARS
                .iter()
                .copied()
                .chain(pass.iter().map(String::as_str))
            {
                line.push_str(&format!(" --env {k}"));
            }
            for (k, v) in set {
                line.push_str(&format!(" --env {}", quote(&format!("{k}={v}"))));
            }
            if c.is_path() {
                // A root file system directory, by absolute path.
                let abs = if c.image.starts_with('/') {
                    quote(&c.image)
                } else {
                    format!("\"$PWD\"/{}", quote(&c.image))
                };
                // `:O`: an overlay on it, so that what podman writes there (`/etc/hosts`,
                // `/run/.containerenv`) leaves the directory, and so its digest, unchanged.
                line.push_str(&format!(" --rootfs {abs}:O"));
            } else {
                line.push_str(&format!(" {}", quote(&c.image)));
            }
        }
        Runtime::Apptainer | Runtime::Singularity => {
            // The host's environment is inherited; the workspace is bound at its own path.
            line.push_str(" exec --bind \"$PWD\" --pwd \"$PWD\"");
            for (k, v) in set {
                line.push_str(&format!(" --env {}", quote(&format!("{k}={v}"))));
            }
            line.push_str(&format!(" {}", quote(&c.image)));
        }
    }
    line.push_str(&format!(" sh -c {}", quote(cmd)));
    line
}

/// What a tool command printed, or an image's digest, computed once per process.
type Memo = Mutex<HashMap<(PathBuf, String), Result<String, String>>>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

fn remembered(root: &Path, what: String, f: impl FnOnce() -> Result<String>) -> Result<String> {
    // Held while computing, so that parallel assessments run each command once.
    let mut m = memo().lock().unwrap_or_else(|e| e.into_inner());
    m.entry((root.to_path_buf(), what))
        .or_insert_with(|| f().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// How long a tool command or an image lookup may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `argv` in `dir`; its standard output, or an error with the end of its standard error.
fn output_of(argv: &[&str], dir: &Path) -> Result<Vec<u8>> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", argv[0]))?;
    // Read both pipes on threads so that a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let read_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).map(|_| b)
    });
    let read_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish in {} s", COMMAND_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = read_out.join().expect("reader").unwrap_or_default();
    let stderr = read_err.join().expect("reader");
    if !status.success() {
        let text = String::from_utf8_lossy(&stderr);
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{status}: {}", tail.join(" / ").trim());
    }
    Ok(stdout)
}

/// A command's output as an identity: the text itself when short and readable (so an
/// explanation can say `2.5.0 -> 2.6.0`), else its hash.
fn identity(output: &[u8]) -> String {
    match std::str::from_utf8(output) {
        Ok(t) if t.trim().len() <= 200 && !t.trim().chars().any(char::is_control) => {
            t.trim().to_string()
        }
        _ => format!("blake3:{}", blake3::hash(output).to_hex()),
    }
}

/// The identity of a `cmd:` tool: what it prints, run with `sh -c` in the workspace.
fn tool_output(root: &Path, cmd: &str) -> Result<String> {
    remembered(root, format!("tool {cmd}"), || {
        output_of(&["sh", "-c", cmd], root).map(|o| identity(&o))
    })
    .with_context(|| format!("tools: `{cmd}` failed"))
}

/// The packages installed in a Python environment (a venv, or any prefix with
/// `lib/pythonX.Y/site-packages`), from the names of their `*.dist-info` / `*.egg-info`
/// directories (`torch-2.5.1.dist-info`), which is what `pip freeze` reads too, without starting
/// Python: their count and a hash of the sorted list. Once per process.
fn python_packages(root: &Path, venv: &str) -> Result<String> {
    remembered(root, format!("python {venv}"), || {
        let prefix = root.join(venv);
        let mut names = Vec::new();
        let mut found = false;
        for lib in ["lib", "lib64"] {
            let Ok(pythons) = std::fs::read_dir(prefix.join(lib)) else {
                continue;
            };
            for py in pythons.flatten() {
                let site = py.path().join("site-packages");
                let Ok(entries) = std::fs::read_dir(&site) else {
                    continue;
                };
                found = true;
                for e in entries.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.ends_with(".dist-info") || n.ends_with(".egg-info") {
                        names.push(n);
                    }
                }
            }
        }
        if !found {
            bail!(
                "{} has no lib/python*/site-packages (name a virtual environment's directory)",
                prefix.display()
            );
        }
        names.sort();
        names.dedup();
        let list = names.join("\n");
        Ok(format!(
            "{} packages, blake3:{}",
            names.len(),
            &blake3::hash(list.as_bytes()).to_hex()[..16]
        ))
    })
}

/// The digest of an image in podman's store: its image id, the hash of its configuration
/// (which names the hash of every layer), so a rebuilt or re-tagged image changes it.
fn podman_digest(root: &Path, image: &str) -> Result<String> {
    remembered(root, format!("podman {image}"), || {
        let out = output_of(
            &[
                "podman", "image", "inspect", "--format", "{{.Id}}", "--", image,
            ],
            root,
        )
        .with_context(|| {
            format!(
                "podman has no image {image} (repro never pulls: pull, build or import it first)"
            )
        })?;
        let id = String::from_utf8_lossy(&out).trim().to_string();
        if id.is_empty() {
            bail!("podman gave no id for image {image}");
        }
        Ok(if id.contains(':') {
            id
        } else {
            format!("sha256:{id}")
        })
    })
}

/// Fill in the declared parts of `fp` for `stage`: `env:` values, `tools:` identities and the
/// container image's digest. Does nothing for a stage that declares none.
pub(crate) fn fill(hasher: &Hasher, stage: &Stage, fp: &mut Fingerprint) -> Result<()> {
    let root = hasher.root;
    let env = &stage.env;
    if env.is_empty() {
        return Ok(());
    }
    for name in &env.pass {
        let value = std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        fp.env.insert(name.clone(), value);
    }
    for (k, v) in &env.set {
        fp.env.insert(k.clone(), Some(v.clone()));
    }
    let files: Vec<&str> = env
        .tools
        .iter()
        .filter_map(|t| match t {
            Tool::File(p) => Some(p.as_str()),
            Tool::Cmd(_) | Tool::Python(_) => None,
        })
        .chain(
            env.container
                .iter()
                .filter(|c| c.is_path())
                .map(|c| c.image.trim_start_matches("./")),
        )
        .collect();
    let mut hashes: HashMap<&str, String> = HashMap::new();
    if !files.is_empty() {
        let contents = hasher
            .contents(&files)
            .with_context(|| format!("stage '{}': hashing its tools", stage.name))?;
        for (p, c) in files.iter().zip(contents) {
            hashes.insert(p, c.hash().unwrap_or("missing").to_string());
        }
    }
    for t in &env.tools {
        let id = match t {
            Tool::File(p) => hashes[p.as_str()].clone(),
            Tool::Cmd(c) => {
                tool_output(root, c).with_context(|| format!("stage '{}'", stage.name))?
            }
            Tool::Python(venv) => python_packages(root, venv)
                .with_context(|| format!("stage '{}': tools: python: {venv}", stage.name))?,
        };
        fp.tools.insert(t.label(), id);
    }
    if let Some(c) = &env.container {
        let digest = if c.is_path() {
            hashes[c.image.trim_start_matches("./")].clone()
        } else {
            podman_digest(root, &c.image)
                .with_context(|| format!("stage '{}': container {}", stage.name, c.image))?
        };
        fp.container = Some(ContainerId {
            image: c.image.clone(),
            digest,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, runtime: Runtime) -> Container {
        Container {
            image: image.into(),
            runtime,
        }
    }

    #[test]
    fn runtime_is_chosen_by_what_is_installed_and_what_the_image_is() {
        let only = |names: &'static [&'static str]| move |p: &str| names.contains(&p);
        let podman = only(&["podman"]);
        let appt = only(&["apptainer"]);
        let none = only(&[]);
        assert_eq!(Runtime::find_in("bb:1", None, &podman), Ok(Runtime::Podman));
        assert_eq!(
            Runtime::find_in("./root", None, &podman),
            Ok(Runtime::Podman)
        );
        assert_eq!(
            Runtime::find_in("./e.sif", None, &appt),
            Ok(Runtime::Apptainer)
        );
        let err = Runtime::find_in("e.sif", None, &podman).unwrap_err();
        assert!(err.contains("install apptainer"), "{err}");
        let both = only(&["podman", "apptainer"]);
        assert_eq!(
            Runtime::find_in("/e.sif", Some("apptainer"), &both),
            Ok(Runtime::Apptainer)
        );
        let err = Runtime::find_in("bb", None, &none).unwrap_err();
        assert!(err.contains("no container runtime found"), "{err}");
        assert!(err.contains("podman, apptainer, singularity"), "{err}");
        let err = Runtime::find_in("bb", None, &appt).unwrap_err();
        assert!(err.contains("install podman"), "{err}");
        let err = Runtime::find_in("bb", Some("docker"), &both).unwrap_err();
        assert!(err.contains("not one of"), "{err}");
        let err = Runtime::find_in("bb", Some("podman"), &appt).unwrap_err();
        assert!(err.contains("not on PATH"), "{err}");
    }

    #[test]
    fn command_lines_set_variables_and_enter_the_container_at_the_same_path() {
        let set: BTreeMap<String, String> = [("SEED".to_string(), "1 2".to_string())].into();
        let pass = vec!["LANG".to_string()];
        assert_eq!(
            command_line("echo $SEED > o", &set, &pass, None),
            "export SEED='1 2'\necho $SEED > o"
        );
        let c = container("localhost/bb:1", Runtime::Podman);
        assert_eq!(
            command_line("echo it's > o", &set, &pass, Some(&c)),
            "exec podman run --rm -v \"$PWD\":\"$PWD\" -w \"$PWD\" --env REPRO_STAGE \
             --env REPRO_KEY --env REPRO_CHECKPOINT --env OMP_NUM_THREADS \
             --env CUDA_VISIBLE_DEVICES --env LANG --env 'SEED=1 2' localhost/bb:1 \
             sh -c 'echo it'\\''s > o'"
        );
        let c = container("./rootfs", Runtime::Podman);
        let line = command_line("true", &BTreeMap::new(), &[], Some(&c));
        assert!(
            line.ends_with(" --rootfs \"$PWD\"/./rootfs:O sh -c true"),
            "{line}"
        );
        let c = container("/opt/env.sif", Runtime::Apptainer);
        assert_eq!(
            command_line("make", &set, &pass, Some(&c)),
            "exec apptainer exec --bind \"$PWD\" --pwd \"$PWD\" --env 'SEED=1 2' \
             /opt/env.sif sh -c make"
        );
    }

    #[test]
    fn a_python_environment_is_its_installed_packages() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("v/lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("torch-2.5.1.dist-info")).unwrap();
        std::fs::create_dir_all(site.join("torch")).unwrap();
        let a = python_packages(dir.path(), "v").unwrap();
        assert!(a.starts_with("1 packages, blake3:"), "{a}");
        // Another directory: the memo is per environment.
        let site2 = dir.path().join("w/lib/python3.11/site-packages");
        std::fs::create_dir_all(site2.join("torch-2.6.0.dist-info")).unwrap();
        let b = python_packages(dir.path(), "w").unwrap();
        assert!(b.starts_with("1 packages") && a != b, "{a} {b}");
        let err = python_packages(dir.path(), "nothere").unwrap_err();
        assert!(format!("{err:#}").contains("site-packages"), "{err:#}");
    }

    #[test]
    fn a_command_identity_is_its_short_output_or_a_hash() {
        assert_eq!(identity(b"2.5.1\n"), "2.5.1");
        assert!(identity(b"a\nb").starts_with("blake3:"));
        assert!(identity(&[b'x'; 300]).starts_with("blake3:"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(tool_output(dir.path(), "echo 1.2").unwrap(), "1.2");
        let err = tool_output(dir.path(), "echo oops >&2; exit 3").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("oops") && msg.contains("exit status: 3"),
            "{msg}"
        );
    }
}
