//! The convergence check at the end of a run: once typing has stopped, every client must have its
//! edits acknowledged, and every client of a document must then reach exactly the version and text
//! that a fresh reader gets in its snapshot. Since every edit was acknowledged before the reader
//! opens the document, and an ack is sent only after the commit, that snapshot is the final state.

use std::time::Duration;

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tandem_client::{Client, ClientOptions, DocHandle, DocId};
use tokio::time::Instant;

/// Documents one reader connection opens (the server allows 100 per connection by default).
const DOCS_PER_READER: usize = 50;
/// Every wait gets at least this long, even once the overall time is spent, so that a slow
/// settling still ends with a verdict on every document rather than a wall of timeouts.
const MIN_WAIT: Duration = Duration::from_secs(2);
/// Problems described in the report; further ones are only counted.
const MAX_PROBLEMS: usize = 10;

/// The outcome of the check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Convergence {
    /// Every client is synced and equals the reader's snapshot of its document.
    pub converged: bool,
    pub documents: usize,
    pub clients: usize,
    /// Clients with unacknowledged edits when the settle time ran out.
    pub unsynced: usize,
    /// Documents whose snapshot could not be read.
    pub unreadable: usize,
    /// Clients whose version or text differs from the snapshot (or never reached its version).
    pub diverged: usize,
    /// The first problems, in words.
    pub problems: Vec<String>,
}

impl Convergence {
    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }
}

/// Checks `members[d]` (the handles of every client of `docs[d]`) against fresh snapshots read
/// through `urls`, within `timeout` overall (plus at most `MIN_WAIT`, 2 s, per step).
pub async fn check(
    urls: &[String],
    token: Option<&str>,
    docs: &[DocId],
    members: &[Vec<DocHandle>],
    timeout: Duration,
) -> Convergence {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(MIN_WAIT);
    let mut result = Convergence {
        documents: docs.len(),
        clients: members.iter().map(Vec::len).sum(),
        ..Convergence::default()
    };

    let all = members.iter().flatten();
    let synced = join_all(all.clone().map(|h| h.wait_synced(left()))).await;
    for (handle, outcome) in all.zip(synced) {
        if let Err(e) = outcome {
            result.unsynced += 1;
            result.problem(format!("{}: not synced: {e}", handle.doc()));
        }
    }

    let chunks = docs.chunks(DOCS_PER_READER).enumerate();
    let reads =
        join_all(chunks.map(|(k, chunk)| read_snapshots(&urls[k % urls.len()], token, chunk, left()))).await;
    let snapshots: Vec<Result<(u64, String), String>> = reads.into_iter().flatten().collect();

    let mut waits = Vec::new();
    for ((doc, handles), snapshot) in docs.iter().zip(members).zip(&snapshots) {
        match snapshot {
            Ok((version, text)) => waits.extend(handles.iter().map(|h| async move {
                let reached = h.wait_version(*version, left()).await;
                (h, version, text, reached)
            })),
            Err(e) => {
                result.unreadable += 1;
                result.problem(format!("{doc}: no snapshot: {e}"));
            }
        }
    }
    for (handle, version, text, reached) in join_all(waits).await {
        let problem = match reached {
            Err(e) => Some(format!("never reached version {version}: {e}")),
            Ok(()) if handle.version() != *version => {
                Some(format!("at version {}, the server at {version}", handle.version()))
            }
            Ok(()) if handle.text() != *text => Some(text_difference(*version, &handle.text(), text)),
            Ok(()) => None,
        };
        if let Some(problem) = problem {
            result.diverged += 1;
            result.problem(format!("{}: {problem}", handle.doc()));
        }
    }
    result.converged = result.unsynced == 0 && result.unreadable == 0 && result.diverged == 0;
    result
}

/// Opens each document of `docs` on a fresh connection to `url` and returns its snapshot (version,
/// text), or why it could not be read, in the order of `docs`.
async fn read_snapshots(
    url: &str,
    token: Option<&str>,
    docs: &[DocId],
    timeout: Duration,
) -> Vec<Result<(u64, String), String>> {
    let options = ClientOptions {
        token: token.map(str::to_owned),
        reconnect: false,
        connect_timeout: timeout,
        request_timeout: timeout,
        ..ClientOptions::default()
    };
    let reader = match Client::connect(url, options).await {
        Ok(reader) => reader,
        Err(e) => return docs.iter().map(|_| Err(format!("reader cannot connect to {url}: {e}"))).collect(),
    };
    let opened = join_all(docs.iter().map(|doc| reader.open(doc))).await;
    let snapshots = opened
        .into_iter()
        .map(|handle| handle.map(|h| (h.version(), h.text())).map_err(|e| e.to_string()))
        .collect();
    let _ = reader.shutdown().await;
    snapshots
}

/// How a client's text differs from the server's at `version`: both lengths, and where they first
/// differ with a few characters of each around it, so that a report tells an order swapped at a
/// tie from a lost or doubled edit.
pub fn text_difference(version: u64, client: &str, server: &str) -> String {
    let at = client.chars().zip(server.chars()).take_while(|(a, b)| a == b).count();
    let around = |text: &str| -> String { text.chars().skip(at.saturating_sub(8)).take(24).collect() };
    format!(
        "text differs at version {version}: {} characters, the server {}; first at character {at}: {:?}, the server {:?}",
        client.chars().count(),
        server.chars().count(),
        around(client),
        around(server)
    )
}

#[cfg(test)]
mod tests {
    use super::text_difference;

    #[test]
    fn a_text_difference_names_where_the_texts_part() {
        let said = text_difference(7, "hello, wxrld and more", "hello, world and more");
        assert_eq!(
            said,
            "text differs at version 7: 21 characters, the server 21; first at character 8: \
             \"hello, wxrld and more\", the server \"hello, world and more\""
        );
        let said = text_difference(3, "abcdefghijklmnopqrstuvwxyz-ab", "abcdefghijklmnopqrstuvwxyz");
        assert!(said.ends_with("first at character 26: \"stuvwxyz-ab\", the server \"stuvwxyz\""), "{said}");
    }
}
