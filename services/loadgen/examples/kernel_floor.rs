//! The kernel's floor under issue 15's targets: what the least a server can do per op costs on this
//! machine, with none of Tandem's code in the way.
//!
//! `cargo run --release -p tandem-loadgen --example kernel_floor -- [OPS] [RATE] [READERS] [BATCH]
//! [SYNC_EVERY] [APART]` (defaults 20000 ops, 2500 ops/s, 4 readers, 1 op per wake-up, a commit
//! every wake-up, APART 0; RATE 0: as fast as it goes; SYNC_EVERY 0: never, only the run without
//! the durable write; APART 1: a system call per frame). The log
//! file goes in a temporary folder under `FLOOR_DIR` (the system's temporary folder by default):
//! put it on the file system whose `fdatasync` is to be measured.
//!
//! One server thread does, for every wake-up: a blocking read of BATCH op frames from one writer's
//! loopback TCP socket (the wake-up an op's arrival costs), every SYNC_EVERY wake-ups a 4 KiB
//! `pwrite` plus `fdatasync` of a log file (one durable commit: the least SQLite's WAL does; the
//! single process commits about 2.7 ops at once at `typing` and 46 at `max`, from its
//! `tandem_sequencer_batch_ops` histogram), one write of BATCH ack frames back to the writer and
//! one of BATCH broadcast frames to each of READERS other sockets (the fan-out `typing` measures).
//! A client thread paces the writer at RATE and waits for each ack; a reader thread drains the
//! broadcasts. The server thread's own CPU time (user + system, `/proc/thread-self/schedstat`)
//! divided by the ops is the floor; the same run without the durable write (neither the `pwrite`
//! nor the `fdatasync`) shows what durability costs. The loopback receiver's TCP processing runs
//! inside the sender's `write`, so it is charged to the server, as it is to Tandem's.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// About the size of a `typing` op frame and of the broadcast frame it becomes.
const FRAME: usize = 120;
const PAGE: usize = 4096;
/// Pages the log file cycles through, like a WAL overwritten after each checkpoint.
const LOG_PAGES: u64 = 1024;

struct Setup {
    ops: usize,
    rate: f64,
    readers: usize,
    batch: usize,
    sync_every: usize,
    frames_apart: bool,
}

const USAGE: &str = "kernel_floor [OPS] [RATE] [READERS] [BATCH] [SYNC_EVERY] [APART]";

/// Argument `i` (named `name`) parsed, or `default` when it is not given.
fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    args.get(i).map_or(Ok(default), |value| {
        value.parse().with_context(|| format!("{name} {value:?} (usage: {USAGE})"))
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() <= 6, "at most 6 arguments (usage: {USAGE})");
    let setup = Setup {
        ops: arg(&args, 0, "OPS", 20000)?,
        rate: arg(&args, 1, "RATE", 2500.0)?,
        readers: arg(&args, 2, "READERS", 4)?,
        batch: arg(&args, 3, "BATCH", 1)?,
        sync_every: arg(&args, 4, "SYNC_EVERY", 1)?,
        frames_apart: match arg(&args, 5, "APART", 0u8)? {
            0 => false,
            1 => true,
            other => anyhow::bail!("APART must be 0 or 1, not {other}"),
        },
    };
    anyhow::ensure!(setup.rate.is_finite() && setup.rate >= 0.0, "RATE must be 0 (full speed) or more ops/s");
    anyhow::ensure!(
        setup.batch >= 1 && setup.ops >= setup.batch && setup.ops % setup.batch == 0,
        "BATCH must be at least 1 and divide OPS ({} ops, {} per wake-up)",
        setup.ops,
        setup.batch
    );
    // On the file system under test: the system's temporary folder unless FLOOR_DIR says another.
    let parent = std::env::var_os("FLOOR_DIR").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let dir = tempfile::tempdir_in(parent)?;
    let log = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.path().join("log"))?;
    // Written and flushed once beforehand, so the timed writes overwrite allocated blocks.
    log.write_all_at(&vec![0u8; PAGE * LOG_PAGES as usize], 0)?;
    log.sync_all()?;
    println!(
        "{} ops at {}, {} readers, {} op(s) per wake-up, {}, {FRAME} B frames{}",
        setup.ops,
        if setup.rate > 0.0 { format!("{} ops/s", setup.rate) } else { "full speed".into() },
        setup.readers,
        setup.batch,
        match setup.sync_every {
            0 => "no commit".to_owned(),
            n => format!("a commit every {n} wake-up(s)"),
        },
        if setup.frames_apart { ", a system call per frame" } else { "" }
    );
    // SYNC_EVERY 0 asks for no commits: the durable run would only repeat the other.
    let runs: &[bool] = if setup.sync_every == 0 { &[false] } else { &[true, false] };
    for &durable in runs {
        let per_op = run(&setup, &log, durable)?;
        // "without": neither the `pwrite` nor the `fdatasync`.
        let what = if durable { "with fdatasync" } else { "without fdatasync" };
        println!("server thread CPU per op, {what}: {per_op:.1} µs");
    }
    Ok(())
}

/// One run; returns the server thread's CPU time per op, in µs.
fn run(setup: &Setup, log: &File, durable: bool) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writer = TcpStream::connect(addr)?;
    let readers: Vec<TcpStream> =
        (0..setup.readers).map(|_| TcpStream::connect(addr)).collect::<Result<_, _>>()?;
    let mut accepted = Vec::new();
    for _ in 0..=setup.readers {
        let (stream, _) = listener.accept()?;
        accepted.push(stream);
    }
    for stream in accepted.iter().chain(readers.iter()).chain([&writer]) {
        stream.set_nodelay(true)?;
    }
    // Connections are accepted in the order they were made: the writer's first.
    let mut from_writer = accepted.remove(0);
    let mut to_readers = accepted;
    let wakeups = setup.ops / setup.batch;
    let bytes = FRAME * setup.batch;

    let drain = thread::spawn({
        let mut readers = readers;
        move || -> std::io::Result<()> {
            let mut buf = vec![0u8; bytes];
            for _ in 0..wakeups {
                for reader in &mut readers {
                    reader.read_exact(&mut buf)?;
                }
            }
            Ok(())
        }
    });
    let (rate, batch) = (setup.rate, setup.batch);
    let client = thread::spawn(move || -> std::io::Result<()> {
        let (frames, mut ack) = (vec![b'o'; bytes], vec![0u8; bytes]);
        let start = Instant::now();
        for i in 0..wakeups {
            if rate > 0.0 {
                let due = start + Duration::from_secs_f64((i * batch) as f64 / rate);
                thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            writer.write_all(&frames)?;
            writer.read_exact(&mut ack)?;
        }
        Ok(())
    });

    let (mut buf, page, broadcast) = (vec![0u8; bytes], vec![b'w'; PAGE], vec![b'b'; bytes]);
    // A system call per frame (each op its own read, ack and broadcasts, as ops from many
    // connections are), or one per batch.
    let piece = if setup.frames_apart { FRAME } else { bytes };
    let cpu_before = thread_cpu_ns()?;
    for i in 0..wakeups {
        for frame in buf.chunks_mut(piece) {
            from_writer.read_exact(frame)?;
        }
        if durable && (i + 1) % setup.sync_every.max(1) == 0 {
            log.write_all_at(&page, (i as u64 % LOG_PAGES) * PAGE as u64)?;
            log.sync_data()?;
        }
        for frame in buf.chunks(piece) {
            from_writer.write_all(frame)?;
        }
        for reader in &mut to_readers {
            for frame in broadcast.chunks(piece) {
                reader.write_all(frame)?;
            }
        }
    }
    let ns = thread_cpu_ns()? - cpu_before;
    client.join().expect("the client thread panicked")?;
    drain.join().expect("the reader thread panicked")?;
    Ok(ns as f64 / 1_000.0 / (wakeups * setup.batch) as f64)
}

/// The nanoseconds this thread has run on a CPU, user and kernel (the first field of
/// `/proc/thread-self/schedstat`, the scheduler's own account: exact, where `stat`'s ticks are 10 ms).
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let first = schedstat.split_whitespace().next();
    Ok(first.ok_or_else(|| anyhow::anyhow!("empty /proc/thread-self/schedstat"))?.parse()?)
}
