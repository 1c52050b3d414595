//! The workspace's binaries, and the processes a test runs: to their end, or read while they
//! run.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often [`output_within`] looks whether its command has ended.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// The `ganglion-node` binary.
///
/// Found beside the running test, benchmark or example, in the folder where cargo puts the
/// workspace's binaries (`target/<profile>/`: tests and benchmarks run from its `deps/`,
/// examples from its `examples/`). The `CARGO_BIN_EXE_*` paths cargo gives a package's own
/// tests do not reach a crate of its own such as this one; the folder is the one they name.
/// Cargo builds `ganglion-node` before the node package's tests, benchmarks and examples;
/// the CLI package's tests need `cargo test --workspace`.
pub fn binary() -> PathBuf {
    workspace_binary("ganglion-node")
}

/// The `ganglion` command-line client, beside [`binary`].
pub fn cli_binary() -> PathBuf {
    workspace_binary("ganglion")
}

fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test");
    let mut dir = exe
        .parent()
        .expect("the folder of the running test")
        .to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build the workspace (`cargo test --workspace` does)",
        path.display()
    );
    path
}

/// Runs `command` to its end and returns what it printed; panics, with what it said on stderr,
/// unless it succeeded.
pub fn succeed(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `command`, with nothing on stdin, to its end and returns its status and what it
/// printed; kills it and panics if it still runs after `deadline` (e.g. a node that was
/// expected to refuse its configuration and started instead).
pub fn output_within(command: &mut Command, deadline: Duration) -> Output {
    let spawned = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = spawned.unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let stdout = read_to_end(child.stdout.take().expect("a piped stdout"));
    let stderr = read_to_end(child.stderr.take().expect("a piped stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {deadline:?}");
        }
        std::thread::sleep(EXIT_POLL);
    };
    Output {
        status,
        stdout: stdout.join().expect("the stdout reader"),
        stderr: stderr.join().expect("the stderr reader"),
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn read_to_end(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Reads `pipe` line by line to its end on a thread of its own, so that the process writing
/// it never blocks on a full pipe, and sends the first thing `pick` finds in a line. The
/// receiver is disconnected, with nothing sent, if the pipe ends first (the process exited).
pub fn first_match<T, F>(pipe: impl Read + Send + 'static, pick: F) -> mpsc::Receiver<T>
where
    T: Send + 'static,
    F: Fn(&str) -> Option<T> + Send + 'static,
{
    // One value is ever sent: a place for it is all the channel needs.
    let (found, receiver) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut lines = BufReader::new(pipe).lines().map_while(Result::ok);
        if let Some(value) = lines.by_ref().find_map(|line| pick(line.as_str())) {
            let _ = found.send(value);
        }
        // Read to the end all the same, so that the process never blocks on a full pipe.
        lines.for_each(drop);
    });
    receiver
}
