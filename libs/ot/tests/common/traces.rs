//! Loading and replaying the editing traces in `testdata/editing-traces/` (shared by the replay
//! test and the benchmark through `#[path]`).

// Each target that includes this module uses only part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ropey::Rope;
use serde::Deserialize;
use tandem_ot::{Operation, OtError};

/// One recorded editing session, as published in `josephg/editing-traces`.
#[derive(Debug, Deserialize)]
pub struct Trace {
    #[serde(rename = "startContent")]
    pub start_content: String,
    #[serde(rename = "endContent")]
    pub end_content: String,
    pub txns: Vec<Txn>,
}

/// A group of patches made at one time, applied in the order given.
#[derive(Debug, Deserialize)]
pub struct Txn {
    pub patches: Vec<Patch>,
}

/// `[position, deleted count, inserted text]`, positions in Unicode scalar values.
#[derive(Debug, Deserialize)]
pub struct Patch(pub usize, pub usize, pub String);

impl Trace {
    /// How many patches the trace has: the unit of the benchmark's throughput.
    pub fn patch_count(&self) -> usize {
        self.txns.iter().map(|t| t.patches.len()).sum()
    }
}

/// The folder with the traces, at the workspace root.
pub fn traces_dir() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../testdata/editing-traces")
}

/// The names of the `*.json.gz` traces in the folder (file names without `.json.gz`), sorted.
pub fn trace_names() -> Vec<String> {
    let dir = traces_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|entry| entry.expect("listing the traces folder").path())
        .filter_map(|path| Some(path.file_name()?.to_str()?.strip_suffix(".json.gz")?.to_owned()))
        .collect();
    names.sort();
    names
}

/// Every trace in the folder with its name, sorted by name.
pub fn load_all() -> Vec<(String, Trace)> {
    trace_names()
        .into_iter()
        .map(|name| {
            let trace = load(&traces_dir().join(format!("{name}.json.gz")));
            (name, trace)
        })
        .collect()
}

/// Reads and decompresses one trace.
pub fn load(path: &Path) -> Trace {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut json = String::new();
    GzDecoder::new(file)
        .read_to_string(&mut json)
        .unwrap_or_else(|e| panic!("decompressing {}: {e}", path.display()));
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Replays every patch as an operation on a rope, the way the server applies committed ops.
pub fn replay(trace: &Trace) -> Result<Rope, OtError> {
    let mut rope = Rope::from_str(&trace.start_content);
    for txn in &trace.txns {
        for Patch(pos, deleted, inserted) in &txn.patches {
            let op = Operation::from_patch(rope.len_chars(), *pos, *deleted, inserted)?;
            op.apply_to_rope(&mut rope)?;
        }
    }
    Ok(rope)
}
