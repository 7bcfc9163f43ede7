//! What a run shows while it works: one overall bar and one line per running stage (elapsed
//! time and the stage's own relayed progress) on a terminal; plain, throttled lines without
//! escape codes when stdout is not a terminal (CI logs, pipes).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) struct Progress {
    fancy: Option<(MultiProgress, ProgressBar)>,
    lines: HashMap<usize, (ProgressBar, Instant)>,
    plain_last: HashMap<usize, Instant>,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Progress {
        // Quiet: no bars, only failures (see `finish`).
        let fancy = (std::io::stdout().is_terminal() && !crate::ui::quiet()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10));
            let overall = multi.add(ProgressBar::new(total as u64));
            overall.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise:.dim} [{bar:30.cyan/blue}] {pos}/{len} stages {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            overall.enable_steady_tick(Duration::from_millis(200));
            crate::ui::set_display(Some(multi.clone()));
            (multi, overall)
        });
        Progress {
            fancy,
            lines: HashMap::new(),
            plain_last: HashMap::new(),
        }
    }

    /// Print a line above the bars (or plainly).
    /// Quiet mode keeps warnings and failures.
    pub(crate) fn println(&self, msg: &str) {
        if crate::ui::quiet() && !is_trouble(msg) {
            return;
        }
        if is_trouble(msg) {
            self.eprint_line(msg);
        } else {
            self.print_line(msg);
        }
    }

    fn print_line(&self, msg: &str) {
        match &self.fancy {
            Some((multi, _)) => {
                let _ = multi.println(msg);
            }
            None => println!("{msg}"),
        }
    }

    /// Failures and warnings go to stderr, so that `repro run > log` still shows them and a
    /// script reading stdout gets only the run's own lines; the bars step aside meanwhile.
    fn eprint_line(&self, msg: &str) {
        match &self.fancy {
            Some((multi, _)) => multi.suspend(|| eprintln!("{msg}")),
            None => eprintln!("{msg}"),
        }
    }

    pub(crate) fn start(&mut self, id: usize, name: &str, verb: &str) {
        if crate::ui::quiet() {
            return;
        }
        match &self.fancy {
            Some((multi, overall)) => {
                let bar = multi.insert_before(overall, ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template(
                        "  {spinner:.green} {prefix:.bold} {elapsed:.dim} {wide_msg}",
                    )
                    .expect("valid template"),
                );
                bar.set_prefix(name.to_string());
                bar.set_message(verb.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.lines.insert(id, (bar, Instant::now()));
            }
            None => println!("{verb} {name}"),
        }
    }

    /// A stage's own progress message (epoch/batch/…).
    pub(crate) fn update(&mut self, id: usize, name: &str, msg: &str) {
        if crate::ui::quiet() {
            return;
        }
        if let Some((bar, _)) = self.lines.get(&id) {
            bar.set_message(msg.to_string());
            return;
        }
        if self.fancy.is_none() {
            // Plain output: at most one progress line per stage every 10 s.
            let now = Instant::now();
            let due = self
                .plain_last
                .get(&id)
                .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(10));
            if due {
                self.plain_last.insert(id, now);
                println!("  {name}: {msg}");
            }
        }
    }

    /// A stage ended (ran, failed, restored, …): one permanent line, and the overall bar moves.
    pub(crate) fn finish(&mut self, id: usize, line: &str) {
        if let Some((bar, _)) = self.lines.remove(&id) {
            bar.finish_and_clear();
        }
        match line.strip_prefix("FAILED") {
            Some(rest) => self.eprint_line(&format!(
                "{}{rest}",
                crate::ui::paint("FAILED", crate::ui::Paint::Red)
            )),
            None => self.println(line),
        }
        if let Some((_, overall)) = &self.fancy {
            overall.inc(1);
        }
    }

    /// Remove a stage's line without printing anything (a step that started and gave way).
    pub(crate) fn end_line(&mut self, id: usize) {
        if let Some((bar, _)) = self.lines.remove(&id) {
            bar.finish_and_clear();
        }
    }

    /// Count a stage that needed no work (fresh) without printing a line for it.
    pub(crate) fn skip_quietly(&mut self) {
        if let Some((_, overall)) = &self.fancy {
            overall.inc(1);
        }
    }

    pub(crate) fn done(&mut self) {
        crate::ui::set_display(None);
        for (_, (bar, _)) in self.lines.drain() {
            bar.finish_and_clear();
        }
        if let Some((_, overall)) = &self.fancy {
            overall.finish_and_clear();
        }
    }
}

/// Where an invocation spends its time, phase by phase, printed to stderr when the environment
/// sets `REPRO_TIMINGS=1` (for diagnosing a slow no-op run; silent otherwise).
pub struct Phases {
    on: bool,
    start: Instant,
    last: Instant,
}

impl Phases {
    /// Start timing now; on only when `REPRO_TIMINGS=1`.
    pub fn start() -> Phases {
        let now = Instant::now();
        Phases {
            on: std::env::var_os("REPRO_TIMINGS").is_some_and(|v| v == "1"),
            start: now,
            last: now,
        }
    }

    /// Report the time since the previous mark under `label`.
    pub fn mark(&mut self, label: &str) {
        if self.on {
            let now = Instant::now();
            eprintln!(
                "timing: {label:<24} {:>8.2} ms  (total {:.2} ms)",
                (now - self.last).as_secs_f64() * 1e3,
                (now - self.start).as_secs_f64() * 1e3
            );
            self.last = now;
        }
    }
}

/// A line that reports trouble (a failure, a warning, an interrupt): printed on stderr.
fn is_trouble(msg: &str) -> bool {
    ["warning", "interrupted", "FAILED"]
        .iter()
        .any(|w| msg.starts_with(w))
}
