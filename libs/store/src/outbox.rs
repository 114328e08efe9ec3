//! What both implementations share of [`EventStore::unpublished`](crate::EventStore::unpublished):
//! cutting a page at a commit boundary and ordering the records of a commit.
//!
//! Each store reads the outbox in commit order only (`ORDER BY commit_seq LIMIT limit + 1`, a range
//! scan of its `(partition, commit_seq)` index), hands the rows to [`page`], and if the first commit
//! alone is larger than the limit, reads that one commit whole. The order inside a commit is set
//! here, in Rust, where `seq` compares as the `u64` it is.

use tandem_protocol::records::SequencedRecord;

use crate::UnpublishedCommit;

/// One row of the outbox: a commit number and one of its records.
pub(crate) type OutboxRow = (u64, SequencedRecord);

/// What a store does with the rows it read.
pub(crate) enum Page {
    /// The page to return.
    Done(Vec<UnpublishedCommit>),
    /// The first commit holds more than `limit` records: read it whole and return it alone.
    FirstCommitTooLarge(u64),
}

/// How many rows to read for a page of `limit` records: one more, to tell a whole last commit from
/// a cut one. As an SQL bound, saturated.
pub(crate) fn rows_to_read(limit: usize) -> i64 {
    i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
}

/// Makes a page of at most `limit` records from `rows`: at most `limit + 1` rows ascending by commit
/// number. A commit the rows may hold only part of (the last one, when there are more than `limit`)
/// is left out; if that leaves nothing, its number is returned instead.
pub(crate) fn page(mut rows: Vec<OutboxRow>, limit: usize) -> Page {
    if rows.len() > limit {
        if let Some(&(cut, _)) = rows.last() {
            rows.retain(|(commit, _)| *commit < cut);
            if rows.is_empty() {
                return Page::FirstCommitTooLarge(cut);
            }
        }
    }
    Page::Done(group(rows))
}

/// Groups whole commits' rows by commit, each commit in the documented order.
pub(crate) fn group(mut rows: Vec<OutboxRow>) -> Vec<UnpublishedCommit> {
    rows.sort_by(|(a_commit, a), (b_commit, b)| a_commit.cmp(b_commit).then_with(|| order(a).cmp(&order(b))));
    let mut commits: Vec<UnpublishedCommit> = Vec::new();
    for (commit, record) in rows {
        match commits.last_mut() {
            Some(last) if last.commit == commit => last.records.push(record),
            _ => commits.push(UnpublishedCommit { commit, records: vec![record] }),
        }
    }
    commits
}

/// The sort key of a record inside its commit: document, then the version it follows (an event
/// sorts at its version, a rejection just after the version it was refused at), then author.
fn order(record: &SequencedRecord) -> (&str, u64, u8, &str, u64) {
    match record {
        SequencedRecord::Committed(e) => (e.doc.as_str(), e.version, 0, e.client.as_str(), e.seq),
        SequencedRecord::Rejected(r) => (r.doc.as_str(), r.at_version, 1, r.client.as_str(), r.seq),
        SequencedRecord::Reacknowledged { doc, client, seq, version } => {
            (doc.as_str(), *version, 2, client.as_str(), *seq)
        }
        // After everything of the document the same commit stored: it purged them. Two deletions
        // of one document in one commit keep their order: the second found the document empty
        // (last version 0), so the larger last version goes first.
        SequencedRecord::Deleted(d) => (d.doc.as_str(), u64::MAX, 3, "", u64::MAX - d.last_version),
    }
}

#[cfg(test)]
mod tests {
    use tandem_ot::Operation;
    use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Rejection};
    use tandem_protocol::{ClientId, DocId, ErrorCode};

    use super::*;

    fn event(doc: &str, version: u64) -> SequencedRecord {
        SequencedRecord::Committed(CommittedEvent {
            author: String::new(),
            doc: DocId::parse(doc).unwrap(),
            version,
            client: ClientId::parse("c").unwrap(),
            seq: version,
            op: Operation::new(),
        })
    }

    fn rejection(doc: &str, at_version: u64, seq: u64) -> SequencedRecord {
        SequencedRecord::Rejected(Rejection {
            doc: DocId::parse(doc).unwrap(),
            client: ClientId::parse("c").unwrap(),
            seq,
            code: ErrorCode::InvalidOp,
            message: String::new(),
            at_version,
        })
    }

    fn numbers(commits: &[UnpublishedCommit]) -> Vec<(u64, usize)> {
        commits.iter().map(|c| (c.commit, c.records.len())).collect()
    }

    #[test]
    fn a_commit_is_ordered_by_document_then_version_with_rejections_after_their_version() {
        let rows = vec![
            (1, rejection("b", 1, u64::MAX)),
            (1, event("b", 2)),
            (1, rejection("b", 1, 5)),
            (1, event("a", 1)),
            (1, event("b", 1)),
            (1, rejection("a", 0, 1)),
        ];
        let commits = group(rows);
        assert_eq!(
            commits[0].records,
            [
                rejection("a", 0, 1),
                event("a", 1),
                event("b", 1),
                rejection("b", 1, 5),
                rejection("b", 1, u64::MAX),
                event("b", 2)
            ]
        );
    }

    #[test]
    fn a_tombstone_follows_everything_of_its_document_and_two_keep_their_order() {
        let deleted = |doc: &str, last_version: u64| {
            SequencedRecord::Deleted(DocumentDeleted {
                doc: DocId::parse(doc).unwrap(),
                last_version,
                author: String::new(),
            })
        };
        let rows = vec![
            (1, deleted("b", 0)),
            (1, event("c", 1)),
            (1, deleted("b", 7)),
            (1, rejection("b", u64::MAX - 1, 1)),
            (1, event("b", u64::MAX - 1)),
            (1, event("a", 1)),
        ];
        assert_eq!(
            group(rows)[0].records,
            [
                event("a", 1),
                event("b", u64::MAX - 1),
                rejection("b", u64::MAX - 1, 1),
                deleted("b", 7),
                deleted("b", 0),
                event("c", 1)
            ]
        );
    }

    #[test]
    fn pages_end_at_a_commit_boundary() {
        let rows = |commits: &[(u64, u64)]| -> Vec<OutboxRow> {
            commits.iter().flat_map(|&(c, n)| (1..=n).map(move |v| (c, event("d", c * 100 + v)))).collect()
        };
        // Everything fits.
        let Page::Done(p) = page(rows(&[(1, 2), (2, 1)]), 3) else { panic!("fits") };
        assert_eq!(numbers(&p), [(1, 2), (2, 1)]);
        // The fourth row read belongs to commit 2: commit 2 may be cut, so only commit 1 is whole.
        let Page::Done(p) = page(rows(&[(1, 2), (2, 2)]), 3) else { panic!("commit 1 fits") };
        assert_eq!(numbers(&p), [(1, 2)]);
        // The fourth row starts commit 3: commits 1 and 2 are whole.
        let Page::Done(p) = page(rows(&[(1, 2), (2, 1), (3, 1)]), 3) else { panic!("fits") };
        assert_eq!(numbers(&p), [(1, 2), (2, 1)]);
        // A first commit larger than the limit is read whole by itself.
        assert!(matches!(page(rows(&[(4, 3)]), 2), Page::FirstCommitTooLarge(4)));
        let Page::Done(p) = page(Vec::new(), 3) else { panic!("empty") };
        assert!(p.is_empty());
        assert_eq!(rows_to_read(usize::MAX), i64::MAX);
        assert_eq!(rows_to_read(0), 1);
    }
}
