//! How llama.cpp's compute threads wait for each other. ggml runs each step of a model as a
//! graph of operations separated by OpenMP barriers, and libgomp by default spins 300,000
//! times at every barrier before it sleeps. When the cores are shared (two nodes on one
//! machine, the embedder's threads, anything else the box runs), a spinning thread burns the
//! time slice its partner needs: measured here with `llama-bench` on 2 cores, five processes
//! each generating with 2 threads got 2 to 5 tokens/s each (one alone: 164). A short spin
//! (1,000) costs nothing alone (153 tokens/s, pp64 933) and keeps five processes at 16 to 25
//! each. Figures in `docs/performance.md`.
//!
//! libgomp reads its settings once, when it is loaded at process start, so the node sets the
//! variable and executes itself again. An operator's own `GOMP_SPINCOUNT` or
//! `OMP_WAIT_POLICY` is left alone.

use std::os::unix::process::CommandExt;

/// libgomp's spin count the node runs with unless told otherwise.
const SPIN_COUNT: &str = "1000";

/// Re-executes this process with [`SPIN_COUNT`] when neither `GOMP_SPINCOUNT` nor
/// `OMP_WAIT_POLICY` is set; returns when it is set already or the re-execution failed (the
/// node then runs with libgomp's defaults, and says so). Arguments, open files and the
/// process id stay; processes the node starts inherit the variable.
pub fn spin_briefly_at_barriers() {
    if std::env::var_os("GOMP_SPINCOUNT").is_some() || std::env::var_os("OMP_WAIT_POLICY").is_some()
    {
        return;
    }
    // This very file, even if it was replaced or removed on disk since it started.
    let mut args = std::env::args_os();
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(args.next().unwrap_or_else(|| "ganglion-node".into()))
        .args(args)
        .env("GOMP_SPINCOUNT", SPIN_COUNT)
        .exec();
    eprintln!("ganglion-node: running with libgomp's default spin count: {error}");
}
