//! The fault-injection soak (`make chaos`, `make chaos-smoke`, binary `tandem-chaos`): a cluster
//! (its own Kafka broker and Postgres, three sequencers, two gateways), a typing load whose clients
//! fail over between the gateways, and faults from a seeded schedule, each undone as an
//! orchestrator would and given time to recover before the next. The clients' observations go to
//! `observations.jsonl` for the independent checker (integration-tests/chaos/check.py), and the
//! run's figures to a report (docs/RELIABILITY.md with `--write-doc`).
//!
//! - [`schedule`](mod@schedule): the seeded, pure fault schedule;
//! - [`faults`]: applying one fault and restarting, which sequencer owns what;
//! - [`load`]: the typing clients and what they observe;
//! - [`recovery`]: the time until the affected documents commit again;
//! - [`report`]: the Markdown table.

pub mod faults;
pub mod load;
pub mod recovery;
pub mod report;
pub mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tandem_protocol::DocId;

use crate::cluster::Cluster;
use faults::{FaultDriver, Injected};
use load::{Load, LoadConfig, LoadSummary, Observations};
use recovery::{wait_recovered, Affected};
use report::{Checker, LostAck, OwnCheck, Run};
use schedule::{schedule, FaultKind, ScheduleConfig};

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub faults: usize,
    /// Where the observations, manifest, logs, schedule and report go.
    pub out: PathBuf,
    /// Also write docs/RELIABILITY.md.
    pub write_doc: bool,
    pub clients: usize,
    pub docs: usize,
    pub partitions: u32,
    /// Inject network faults (a loopback proxy between sequencer 2 and Postgres).
    pub network: bool,
    /// How the run is replayed, for the report (e.g. `make chaos SEED=1 FAULTS=1000`).
    pub replay: String,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No loss, no divergence, everything settled.
    Passed,
    Failed,
    /// Ctrl-C.
    Interrupted,
}

const SEQUENCERS: usize = 3;
const GATEWAYS: usize = 2;
/// The sequencer that reaches Postgres through the proxy.
const PROXIED: usize = 2;
const SETTLE: Duration = Duration::from_secs(180);

/// Sets the flag when dropped while panicking: a panic on the main thread stops the fault thread too.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs the soak. Every process it starts is stopped when it returns, panics or is interrupted.
pub fn run(options: &Options) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let started_utc = utc_now();
    std::fs::create_dir_all(&options.out).with_context(|| format!("create {}", options.out.display()))?;
    let out = options.out.canonicalize().context("the output folder")?;
    let config = ScheduleConfig {
        faults: options.faults,
        sequencers: SEQUENCERS,
        gateways: GATEWAYS,
        network: options.network,
    };
    let faults = schedule(options.seed, &config);
    let listing: String = faults.iter().map(|f| format!("{f}\n")).collect();
    std::fs::write(out.join("schedule.txt"), &listing).context("write the schedule")?;
    let mut planned: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for fault in &faults {
        *planned.entry(fault.kind).or_default() += 1;
    }
    let planned_text: Vec<String> = planned.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "schedule: {} faults ({}), in {}",
        faults.len(),
        planned_text.join(", "),
        out.join("schedule.txt").display()
    );

    let docs: Vec<DocId> =
        (0..options.docs).map(|i| DocId::parse(&format!("chaos-{i}")).expect("a valid doc id")).collect();
    println!("starting the cluster: own Kafka broker, private Postgres, {SEQUENCERS} sequencers, {GATEWAYS} gateways");
    let mut builder = Cluster::builder()
        .own_broker()
        .private_postgres()
        .sequencers(SEQUENCERS)
        .gateways(GATEWAYS)
        .partitions(options.partitions)
        .logs_dir(&out.join("logs"));
    if options.network {
        builder = builder.sequencer_postgres_proxy(PROXIED);
    }
    let mut cluster = builder.start();
    println!(
        "cluster up after {:.1} s; logs in {}",
        started.elapsed().as_secs_f64(),
        out.join("logs").display()
    );
    let urls: Vec<String> = (0..GATEWAYS).map(|g| cluster.gateway_ws_url(g)).collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("a tokio runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut terminate), Ok(mut hangup)) =
                (signal(SignalKind::terminate()), signal(SignalKind::hangup()))
            else {
                return;
            };
            let name = tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                _ = hangup.recv() => "SIGHUP",
            };
            eprintln!("\n{name}: finishing the current fault, then stopping everything (Ctrl-C again: now)");
            stop.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                // The drop guards cannot run now; the services die with their process group's SIGINT.
                std::process::exit(130);
            }
        });
    }
    let observations = Arc::new(Observations::create(&out.join("observations.jsonl"))?);
    let load_config = LoadConfig { clients: options.clients, docs: docs.clone(), seed: options.seed };
    let mut load = runtime.block_on(Load::start(&urls, &load_config, observations.clone()))?;
    let acks = load.acks().clone();
    let all: Vec<usize> = (0..docs.len()).collect();
    let is_stopped = || stop.load(Ordering::SeqCst);
    let mut problems = Vec::new();
    let baseline = vec![0; docs.len()];
    if wait_recovered(
        &acks,
        &Affected::Docs(all),
        &baseline,
        Instant::now(),
        Duration::from_secs(60),
        &is_stopped,
    )
    .is_none()
    {
        problems.push("warm-up: not every document had an op acknowledged within 60 s".to_owned());
    }
    faults::sleep(Duration::from_secs(2), &is_stopped);
    println!(
        "load running: {} clients typing into {} documents; injecting faults",
        options.clients,
        docs.len()
    );

    let injected: Mutex<Vec<Injected>> = Mutex::new(Vec::new());
    let mut faults_file = std::io::BufWriter::new(
        std::fs::File::create(out.join("faults.jsonl")).context("create faults.jsonl")?,
    );
    let clients = load.clients().to_vec();
    let fault_loop = std::thread::scope(|scope| {
        let _stop_on_panic = StopOnPanic(&stop);
        let thread = scope.spawn(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut driver = FaultDriver::new(&mut cluster, docs.clone(), 0);
                let restarted = driver.restart_exited();
                assert!(restarted.is_empty(), "exited before the first fault: {restarted:?}");
                for fault in &faults {
                    if is_stopped() {
                        break;
                    }
                    let done = driver.apply(fault, &acks, &clients, &is_stopped);
                    print_fault(&done, faults.len());
                    let _ = writeln!(faults_file, "{}", fault_json(&done));
                    let _ = faults_file.flush();
                    injected.lock().expect("injected").push(done);
                    faults::sleep(fault.gap, &is_stopped);
                }
            }))
        });
        thread.join()
    });
    let injected = injected.into_inner().expect("injected");
    let interrupted = stop.load(Ordering::SeqCst);
    match fault_loop {
        Ok(Ok(())) => {}
        Ok(Err(panic)) | Err(panic) => {
            let message = panic_message(&panic);
            eprintln!("the fault driver failed: {message}");
            problems.push(format!("the fault driver failed after {} faults: {message}", injected.len()));
        }
    }
    let faults_length = started.elapsed();

    // Settle: everything up, the documents committing, then the typing stops and every client
    // converges on the last version.
    let mut own = OwnCheck::default();
    let mut checker = Checker::Skipped("the run was interrupted".into());
    let mut texts: Vec<Vec<String>> = Vec::new();
    let edits = runtime.block_on(load.stop_typing());
    println!("typing stopped ({edits} edits); settling");
    if !interrupted {
        let restarted = FaultDriver::new(&mut cluster, docs.clone(), 0).restart_exited();
        if !restarted.is_empty() {
            problems.push(format!("exited at the end and restarted: {}", restarted.join(", ")));
        }
        if let Err(e) = runtime.block_on(load.wait_synced(SETTLE)) {
            problems.push(format!("settling: {e}"));
        }
        let versions = last_versions(&cluster, &docs);
        println!(
            "every edit acknowledged after {}; the documents' versions: {versions:?}",
            report::human(started.elapsed())
        );
        match runtime.block_on(load.write_finals(&versions, SETTLE)) {
            Ok(t) => texts = t,
            Err(e) => problems.push(format!("converging: {e}")),
        }
    }
    let authors: Vec<String> = load.clients().iter().map(|c| c.author_id().to_string()).collect();
    let summary: LoadSummary = runtime.block_on(load.shutdown(edits));
    observations.flush()?;
    println!("clients stopped after {}", report::human(started.elapsed()));
    if summary.events_dropped > 0 {
        problems.push(format!(
            "{} client events were dropped: the observations are incomplete",
            summary.events_dropped
        ));
    }
    if !interrupted {
        own = own_check(&cluster, &docs, &acks.snapshot(), &authors, &texts);
        println!(
            "driver's own check: {} acks missing from the log, {} diverged, {} non-linear",
            own.lost.len(),
            own.diverged.len(),
            own.nonlinear.len()
        );
        let manifest = write_manifest(&out, options, &cluster, &docs, observations.path())?;
        checker = run_checker(&manifest, &out.join("result.json"));
        println!("checker: {}", checker.summary());
    }

    let shape = format!(
        "own Apache Kafka broker, private PostgreSQL, {SEQUENCERS} sequencers, {GATEWAYS} gateways, {} partitions, {} \
         clients typing into {} documents (debug builds){}",
        options.partitions,
        options.clients,
        docs.len(),
        if options.network { format!("; sequencer {PROXIED} reaches Postgres through the loopback proxy") } else { String::new() }
    );
    let length = started.elapsed();
    let report_run = Run {
        seed: options.seed,
        planned: faults.len(),
        started_utc,
        length,
        machine: machine(),
        shape,
        load: &summary,
        injected: &injected,
        checker: &checker,
        own: &own,
        problems: &problems,
        replay: options.replay.clone(),
        folder: out.display().to_string(),
    };
    let markdown = report::markdown(&report_run);
    std::fs::write(out.join("RELIABILITY.md"), &markdown).context("write the report")?;
    println!("\n{}", report::table(&report_run));
    println!(
        "seed {}, {} faults injected in {} (faults phase {}), report {}",
        options.seed,
        injected.len(),
        report::human(length),
        report::human(faults_length),
        out.join("RELIABILITY.md").display()
    );
    for problem in &problems {
        println!("problem: {problem}");
    }
    if options.write_doc && !interrupted {
        let doc = crate::manifest_dir().join("../docs/RELIABILITY.md");
        std::fs::write(&doc, &markdown).context("write docs/RELIABILITY.md")?;
        println!("wrote {}", doc.display());
    }
    drop(cluster);
    if interrupted {
        return Ok(Outcome::Interrupted);
    }
    let checker_ok = match &checker {
        Checker::Skipped(_) => true, // said loudly above; the driver's own check still counts
        other => other.passed(),
    };
    let own_ok = own.lost.is_empty()
        && own.diverged.is_empty()
        && own.nonlinear.is_empty()
        && own.incomplete.is_none();
    Ok(if checker_ok && own_ok && problems.is_empty() { Outcome::Passed } else { Outcome::Failed })
}

fn print_fault(done: &Injected, total: usize) {
    let recovery = done
        .recovery
        .map_or_else(|| "NOT RECOVERED".to_owned(), |r| format!("recovered in {:.2} s", r.as_secs_f64()));
    let restarted = if done.unplanned_restarts.is_empty() {
        String::new()
    } else {
        format!("; exited on their own, restarted: {}", done.unplanned_restarts.join(", "))
    };
    println!(
        "fault {}/{total} {} {} (hold {:.2} s, {} affected): {recovery}, {} acks meanwhile{restarted}",
        done.fault.number,
        done.fault.kind,
        done.target,
        done.fault.hold.as_secs_f64(),
        done.affected.units(),
        done.acks_meanwhile,
    );
}

/// One line of faults.jsonl.
fn fault_json(done: &Injected) -> serde_json::Value {
    json!({
        "number": done.fault.number,
        "kind": done.fault.kind.name(),
        "target": done.target,
        "hold_ms": done.fault.hold.as_millis() as u64,
        "gap_ms": done.fault.gap.as_millis() as u64,
        "affected": match &done.affected {
            Affected::Docs(docs) => json!({"docs": docs}),
            Affected::Clients { clients, docs } => json!({"clients": clients, "docs": docs}),
        },
        "committed_versions_at_fault": done.baseline,
        "recovery_ms": done.recovery.map(|r| r.as_millis() as u64),
        "acks_meanwhile": done.acks_meanwhile,
        "unplanned_restarts": done.unplanned_restarts,
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

/// The last committed version of each document.
fn last_versions(cluster: &Cluster, docs: &[DocId]) -> Vec<u64> {
    let rows = cluster.database().query("SELECT doc, max(version) FROM events GROUP BY doc");
    let max: HashMap<&str, u64> = rows
        .iter()
        .filter_map(|r| r.split_once('|'))
        .filter_map(|(doc, v)| Some((doc, v.parse().ok()?)))
        .collect();
    docs.iter().map(|d| max.get(d.as_str()).copied().unwrap_or(0)).collect()
}

/// Every recorded ack against the event log, each client's final text against the log's text.
fn own_check(
    cluster: &Cluster,
    docs: &[DocId],
    acks: &[Vec<recovery::Ack>],
    authors: &[String],
    texts: &[Vec<String>],
) -> OwnCheck {
    let mut check = OwnCheck::default();
    for (d, doc) in docs.iter().enumerate() {
        let rows = cluster
            .database()
            .query(&format!("SELECT version, client, seq FROM events WHERE doc = '{doc}' ORDER BY version"));
        let mut log: HashMap<u64, (String, u64)> = HashMap::new();
        let mut versions = Vec::new();
        for row in rows {
            let mut fields = row.splitn(3, '|');
            let (Some(v), Some(client), Some(seq)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let (Ok(v), Ok(seq)) = (v.parse::<u64>(), seq.parse::<i64>()) else { continue };
            versions.push(v);
            log.insert(v, (client.to_owned(), seq as u64));
        }
        if versions != (1..=versions.len() as u64).collect::<Vec<_>>() {
            check.nonlinear.push(doc.to_string());
        }
        for ack in &acks[d] {
            let author = &authors[ack.client];
            if log.get(&ack.version) != Some(&(author.clone(), ack.seq)) {
                check.lost.push(LostAck {
                    doc: doc.to_string(),
                    client: author.clone(),
                    seq: ack.seq,
                    version: ack.version,
                    at: ack.at,
                });
            }
        }
        let Some(finals) = texts.get(d) else {
            check.incomplete = Some("no final texts (the clients did not converge)".into());
            continue;
        };
        let (text, _) = crate::typists::postgres_text(cluster.database(), doc);
        for (c, final_text) in finals.iter().enumerate() {
            if *final_text != text {
                check.diverged.push(format!("{doc} at client {c} ({})", authors[c]));
            }
        }
    }
    check
}

fn write_manifest(
    out: &Path,
    options: &Options,
    cluster: &Cluster,
    docs: &[DocId],
    observations: &Path,
) -> anyhow::Result<PathBuf> {
    let manifest = json!({
        "seed": options.seed,
        "postgres_url": cluster.database().url(),
        "brokers": cluster.broker_address(),
        "events_topic": format!("{}.events", cluster.namespace().as_str()),
        "partitions": cluster.partitions(),
        "observations": observations.display().to_string(),
        "docs": docs.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
    });
    let path = out.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)?).context("write the manifest")?;
    Ok(path)
}

/// Runs integration-tests/chaos/check.py with the Python of integration-tests/chaos/venv.sh, if
/// both exist; bounded in time.
fn run_checker(manifest: &Path, result: &Path) -> Checker {
    let dir = crate::manifest_dir().join("chaos");
    let (venv, check) = (dir.join("venv.sh"), dir.join("check.py"));
    for file in [&venv, &check] {
        if !file.exists() {
            let why = format!("{} does not exist (yet)", file.display());
            eprintln!("SKIPPING THE INDEPENDENT CHECKER: {why}; only the driver's own check ran");
            return Checker::Skipped(why);
        }
    }
    let python = match bounded(Command::new("bash").arg(&venv), Duration::from_secs(600)) {
        Ok(stdout) => {
            stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned()
        }
        Err(e) => return Checker::Failed(format!("venv.sh: {e}")),
    };
    let _ = std::fs::remove_file(result);
    println!(
        "running the checker: {python} {} --manifest {} --out {}",
        check.display(),
        manifest.display(),
        result.display()
    );
    let mut command = Command::new(&python);
    command.arg(&check).arg("--manifest").arg(manifest).arg("--out").arg(result);
    let status = bounded(&mut command, Duration::from_secs(1800));
    let parsed = std::fs::read_to_string(result).ok().and_then(|t| serde_json::from_str(&t).ok());
    match (status, parsed) {
        (_, Some(value)) => Checker::Result(value),
        (Err(e), None) => Checker::Failed(e),
        (Ok(_), None) => Checker::Failed(format!("it wrote no readable {}", result.display())),
    }
}

/// Runs `command` (stderr inherited) for at most `limit`; its stdout when it succeeded.
fn bounded(command: &mut Command, limit: Duration) -> Result<String, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {} s: killed", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = reader.join().unwrap_or_default();
    if status.success() {
        Ok(text)
    } else {
        // The checker exits non-zero when it finds a problem; its result.json says which.
        Err(format!("exited with {status}"))
    }
}

/// Cores, CPU model, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or("? GiB".to_owned(), |kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({model}), {memory} RAM, Linux {}", kernel.trim())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from the system clock.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, (rest % 3600) / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_civil_dates() {
        let text = utc_now();
        assert_eq!(text.len(), 19, "{text}");
        assert!(text.starts_with("20"), "{text}");
    }
}
