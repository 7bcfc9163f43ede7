//! `repro-torch` keeps finding libtorch when the checkout moves. Its run path starts with
//! `$ORIGIN/../../.venv/torch/lib` (the checkout's own torch, seen from
//! `target/{debug,release}/`), before the absolute directory it was built against; and
//! `REPRO_TORCH_LIB`, read by `repro`, goes ahead of both. Moving the real checkout is not
//! possible in a test (the absolute directory would still resolve), so the binaries are
//! hard-linked into a fresh `<tmp>/target/release/` and the loader's own account
//! (`LD_DEBUG=libs`) says where it found `libtorch_cpu.so`.
//!
//! Needs the `repro-torch` binary built next to `repro` (`cargo build`, as `cargo test` does).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn torch_bin() -> PathBuf {
    let p = common::bin().with_file_name("repro-torch");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build -p repro-torch`",
        p.display()
    );
    p
}

/// The real libtorch directory the checkout uses (`.venv/torch`, resolved).
fn torch_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/torch");
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", p.display()))
}

/// `<tmp>/target/release/{repro,repro-torch}` (hard links, or copies across file systems),
/// with `<tmp>/.venv/torch` linked to the real torch when `with_venv`.
fn moved_checkout(with_venv: bool) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let bin = tmp.path().join("target/release");
    std::fs::create_dir_all(&bin).unwrap();
    for from in [common::bin().to_path_buf(), torch_bin()] {
        let to = bin.join(from.file_name().unwrap());
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    if with_venv {
        std::fs::create_dir_all(tmp.path().join(".venv")).unwrap();
        std::os::unix::fs::symlink(torch_dir(), tmp.path().join(".venv/torch")).unwrap();
    }
    (tmp, bin)
}

/// `repro doctor` from `bin`, with the loader reporting its library search.
fn doctor(bin: &Path, torch_lib: Option<&Path>) -> Output {
    let mut c = Command::new(bin.join("repro"));
    c.arg("doctor")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("REPRO_TORCH")
        .env_remove("REPRO_TORCH_LIB")
        .env("LD_DEBUG", "libs");
    if let Some(l) = torch_lib {
        c.env("REPRO_TORCH_LIB", l);
    }
    c.output().unwrap()
}

/// Every file the loader tried for `libtorch_cpu.so`, in order (the last is the one found).
fn tried(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| l.split("trying file=").nth(1))
        .filter(|f| f.ends_with("/libtorch_cpu.so"))
        .map(str::to_string)
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn repro_torch_carries_an_origin_relative_run_path_first() {
    let o = Command::new("readelf")
        .arg("-d")
        .arg(torch_bin())
        .output()
        .expect("readelf (binutils) is needed");
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .unwrap_or_else(|| panic!("no run path in repro-torch:\n{text}"));
    let list = &line[line.find('[').unwrap() + 1..line.rfind(']').unwrap()];
    let entries: Vec<&str> = list.split(':').collect();
    assert_eq!(entries[0], "$ORIGIN/../../.venv/torch/lib", "{line}");
    assert!(
        entries[1..].iter().any(|e| e.starts_with('/')),
        "the absolute fallback is gone: {line}"
    );
}

#[test]
fn doctor_runs_from_a_moved_checkout_through_the_relative_run_path() {
    let (tmp, bin) = moved_checkout(true);
    let o = doctor(&bin, None);
    assert!(o.status.success(), "{}", common::both(&o));
    assert!(
        stdout(&o).contains("libtorch        2.11.0"),
        "{}",
        stdout(&o)
    );
    let t = tried(&o);
    let moved = tmp
        .path()
        .join("target/release/../../.venv/torch/lib/libtorch_cpu.so");
    assert_eq!(t, [moved.display().to_string()], "loaded from elsewhere");

    // Without the moved checkout's .venv, the same binary falls back to the absolute entry
    // (the loader drops the missing directory from its search path): the relative entry is
    // what made the difference above.
    let (tmp, bin) = moved_checkout(false);
    let o = doctor(&bin, None);
    assert!(o.status.success(), "{}", common::both(&o));
    let t = tried(&o);
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(
        !t[0].starts_with(&tmp.path().display().to_string()),
        "{t:?}"
    );
}

#[test]
fn repro_torch_lib_goes_first_and_a_wrong_one_is_a_clear_error() {
    let (tmp, bin) = moved_checkout(false);
    let lib = tmp.path().join("libtorch-elsewhere");
    std::os::unix::fs::symlink(torch_dir().join("lib"), &lib).unwrap();
    let o = doctor(&bin, Some(&lib));
    assert!(o.status.success(), "{}", common::both(&o));
    assert!(
        stdout(&o).contains("libtorch        2.11.0"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        tried(&o),
        [lib.join("libtorch_cpu.so").display().to_string()]
    );

    let nothing = tmp.path().join("nothing");
    let o = doctor(&bin, Some(&nothing));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("REPRO_TORCH_LIB") && err.contains(&nothing.display().to_string()),
        "{err}"
    );
}
