//! A service process started by a test: spawned, awaited until it prints the address it listens on,
//! and always killed when dropped, also when the test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a service may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A Tandem binary cargo built next to this test (`target/<profile>/NAME`), or `$ENV_VAR` if set.
pub fn binary(name: &str, env_var: &str) -> PathBuf {
    if let Ok(bin) = std::env::var(env_var) {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    // A binary of this crate (tandem-chaos) lives in target/<profile>/ beside the services.
    if let Some(sibling) = exe.parent().map(|dir| dir.join(name)).filter(|bin| bin.exists()) {
        return sibling;
    }
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("test binaries live in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: run `cargo build --bins` first (make test does)", bin.display());
    bin
}

/// How to start one service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The text before the address in the line the service prints once it is ready, e.g.
    /// `"listening on http://"`; the address is what follows, up to the next `/` or space.
    pub ready_marker: String,
    /// Where the service's log (stderr) goes, appended across restarts; `None` inherits the test's.
    pub log: Option<PathBuf>,
}

/// A running service.
pub struct ServiceProcess {
    spec: ServiceSpec,
    child: Option<Child>,
    address: String,
}

impl ServiceProcess {
    /// Starts the service and waits until it prints its address.
    pub fn start(spec: ServiceSpec) -> Self {
        let (child, address) = spawn(&spec);
        Self { spec, child: Some(child), address }
    }

    /// `HOST:PORT` the service printed.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs: started, not killed, and not exited on its own (a process that
    /// exited is reaped, so [`ServiceProcess::restart`] starts it again).
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else { return false };
        match child.try_wait() {
            Ok(None) => true,
            _ => {
                self.child = None;
                false
            }
        }
    }

    /// The length of the log so far, in bytes (0 without [`ServiceSpec::log`]): where the next
    /// start's lines begin.
    pub fn log_len(&self) -> u64 {
        self.spec.log.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len())
    }

    /// Everything the service logged so far (empty without [`ServiceSpec::log`]).
    pub fn log(&self) -> String {
        self.spec.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "CONT"); // a stopped process must be able to die
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes with its sockets open, like a long GC pause or a hung host.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal(child, "STOP");
        }
    }

    /// SIGCONT after [`ServiceProcess::freeze`].
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            signal(child, "CONT");
        }
    }

    /// SIGTERM, then waits for a graceful exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        signal(&child, "TERM");
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGTERM without waiting: the test watches what the process does while it stops.
    pub fn request_stop(&self) {
        if let Some(child) = &self.child {
            signal(child, "TERM");
        }
    }

    /// Waits up to `limit` for the process to exit: whether it exited successfully, `None` while it
    /// still runs (then it is left running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<bool> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Starts again with the same arguments; a fixed `--listen`/port argument keeps the address.
    pub fn restart(&mut self) {
        self.kill();
        let (child, address) = spawn(&self.spec);
        self.child = Some(child);
        self.address = address;
    }

    /// Changes an argument's value for the next [`ServiceProcess::restart`] (e.g. pin the port).
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        match self.spec.args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < self.spec.args.len() => self.spec.args[i + 1] = value.to_owned(),
            _ => self.spec.args.extend([flag.to_owned(), value.to_owned()]),
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status();
}

fn spawn(spec: &ServiceSpec) -> (Child, String) {
    let mut last_error = String::new();
    // A restart on a fixed port may find it briefly unavailable; try a few times.
    for _ in 0..30 {
        let mut child = Command::new(&spec.program)
            .args(&spec.args)
            .env("TANDEM_LOG", std::env::var("TANDEM_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(match &spec.log {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .expect("the log file opens"),
                ),
                None => Stdio::inherit(),
            })
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", spec.program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let marker = spec.ready_marker.clone();
        std::thread::spawn(move || {
            // Keep draining stdout so the service never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(&marker).nth(1) {
                    let address = rest.split(['/', ' ']).next().unwrap_or_default().to_owned();
                    let _ = tx.send(address);
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(address) => return (child, address),
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                last_error = format!("{} did not start (exit status {status:?})", spec.program.display());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    panic!("{last_error}");
}
