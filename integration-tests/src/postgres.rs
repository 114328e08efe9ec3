//! A PostgreSQL server of the test's own, in a temporary folder on a free port, so a test can crash
//! and restart it (the machine's shared server is not the test's to stop).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::free_port;

/// A private PostgreSQL server; stopped when dropped.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PrivatePostgres {
    /// Creates a cluster with trust authentication and starts it.
    pub fn start() -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::tempdir().expect("a folder for the private postgres");
        // initdb refuses to run as root: as root, the server runs as the `postgres` user.
        let user = if current_uid() == 0 { Some(postgres_user()) } else { None };
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the postgres folder");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"]).arg(&data);
        let output = as_user(&mut initdb, user).output().expect("initdb runs");
        assert!(output.status.success(), "initdb: {}", String::from_utf8_lossy(&output.stderr));
        let mut server = Self { bin, port: free_port(), dir, user, child: None };
        server.start_again();
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Stops the server the way a crash does (immediate shutdown: no checkpoint; the next start
    /// recovers from the WAL). Committed transactions survive; open ones are lost.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-QUIT").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Stops the server with a fast shutdown (SIGINT: open transactions are rolled back, clients
    /// disconnected, a checkpoint written), as an orderly restart by an operator or an orchestrator
    /// does; [`PrivatePostgres::start_again`] starts it again. Waits up to 60 s for the exit, then
    /// crashes it.
    pub fn stop_fast(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").arg("-QUIT").arg(child.id().to_string()).status();
        let _ = child.wait();
    }

    /// `127.0.0.1:PORT` the server listens on.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and data; waits until it accepts connections.
    pub fn start_again(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("the server log");
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log);
        let child = as_user(&mut postgres, self.user).spawn().expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the private postgres did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.crash();
    }
}

fn as_user(command: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid).current_dir("/");
    }
    command
}

/// The newest installed server's binaries (`/usr/lib/postgresql/<version>/bin` on Debian).
fn server_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (make test installs them)")
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| Path::exists(&bin.join("initdb")))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect("an installed PostgreSQL server with initdb")
}

fn current_uid() -> u32 {
    id(&["-u"])
}

fn postgres_user() -> (u32, u32) {
    (id(&["-u", "postgres"]), id(&["-g", "postgres"]))
}

fn id(args: &[&str]) -> u32 {
    let output = Command::new("id").args(args).output().expect("id runs");
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("id prints a number")
}
