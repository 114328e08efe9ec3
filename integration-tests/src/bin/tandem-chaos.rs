//! `tandem-chaos`: the fault-injection soak of the distributed mode (`make chaos`, `make chaos-smoke`).
//! See `tandem_integration_tests::chaos` and `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use tandem_integration_tests::chaos::{run, Options, Outcome};

const HELP: &str = "\
tandem-chaos: starts a cluster (own Kafka broker, private Postgres, 3 sequencers, 2 gateways) and a
typing load whose clients fail over between the gateways, injects faults from a seeded schedule,
restarts what was killed, and reports per fault type the acks meanwhile, the ops lost, the
divergences and the time until the affected documents commit again.

  --faults N        faults to inject (default 1000)
  --seed N|random   the schedule's seed (default random; printed first, replays the schedule)
  --out DIR         observations, manifest, logs, schedule and report (default .tandem/chaos/seed-N)
  --write-doc       also write docs/RELIABILITY.md
  --clients N       typing clients (default 4)
  --docs N          documents (default 6)
  --partitions N    partitions of the topics (default 6)
  --no-network      no network faults (no proxy between sequencer 2 and Postgres)
  --make-target T   the make target the replay command names (default chaos)

The binaries it starts are the ones beside it (cargo build --workspace --all-features --bins).
Exit status: 0 passed, 1 a loss, divergence or failure to settle, 2 bad usage, 130 interrupted.";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut faults = 1000;
    let mut seed: Option<u64> = std::env::var("SEED").ok().and_then(|s| s.parse().ok());
    let mut out = None;
    let mut write_doc = false;
    let (mut clients, mut docs, mut partitions, mut network) = (4, 6, 6, true);
    let mut target = "chaos".to_owned();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().unwrap_or_else(|| usage(&format!("{name} needs a value")));
        match arg.as_str() {
            "--faults" => faults = number(&value("--faults")),
            "--seed" => {
                let v = value("--seed");
                seed = if v == "random" { None } else { Some(number(&v)) };
            }
            "--out" => out = Some(PathBuf::from(value("--out"))),
            "--write-doc" => write_doc = true,
            "--clients" => clients = number(&value("--clients")),
            "--docs" => docs = number(&value("--docs")),
            "--partitions" => partitions = number(&value("--partitions")),
            "--no-network" => network = false,
            "--make-target" => target = value("--make-target"),
            "-h" | "--help" => {
                println!("{HELP}");
                return ExitCode::SUCCESS;
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if clients == 0 || docs == 0 || partitions == 0 {
        usage("--clients, --docs and --partitions must be at least 1");
    }
    let seed = seed.unwrap_or_else(rand::random);
    let replay = format!("make {target} SEED={seed} FAULTS={faults}");
    // The seed first, whatever happens next.
    println!("tandem-chaos: seed {seed} (replay: {replay})");
    let out = out.unwrap_or_else(|| PathBuf::from(format!(".tandem/chaos/seed-{seed}")));
    let options = Options {
        seed,
        faults,
        out,
        write_doc,
        clients,
        docs,
        partitions: u32::try_from(partitions).unwrap_or_else(|_| usage("--partitions is too large")),
        network,
        replay,
    };
    match run(&options) {
        Ok(Outcome::Passed) => {
            println!("PASSED (seed {seed})");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Failed) => {
            println!("FAILED (seed {seed}; replay: {})", options.replay);
            ExitCode::FAILURE
        }
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("tandem-chaos: {e:#} (seed {seed})");
            ExitCode::FAILURE
        }
    }
}

fn number<T: std::str::FromStr>(text: &str) -> T {
    text.parse().unwrap_or_else(|_| usage(&format!("not a number: {text}")))
}

fn usage(problem: &str) -> ! {
    eprintln!("tandem-chaos: {problem}\n\n{HELP}");
    std::process::exit(2)
}
