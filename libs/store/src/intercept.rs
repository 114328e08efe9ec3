//! A store in front of another: every call goes to the inner store, with [`Intercept`] hooks
//! before and after it. The gateway observes its store's health this way, and tests inject
//! failures, hold calls at a gate or record what was written, without each repeating the
//! forwarding of every [`EventStore`] method (and without each needing a change when the trait
//! gains one).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tandem_protocol::records::{CommittedEvent, Outcome};
use tandem_protocol::{ClientId, DocId};

use crate::{
    Checkpoint, ClientRecord, CommitBatch, EventStore, HistoryEntry, PartitionClaim, PartitionId, Snapshot,
    StoreError, StoredDocument, UnpublishedCommit,
};

/// The call an [`Intercept`] sees, with the arguments hooks decide on.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    ClaimPartition(PartitionId),
    Commit(&'a CommitBatch),
    MarkPublished { partition: PartitionId, epoch: u64, through: u64 },
    Unpublished(PartitionId),
    LatestVersion(&'a DocId),
    ReadEvents(&'a DocId),
    LoadDocument(&'a DocId),
    WriteSnapshot(&'a Snapshot),
    FindOutcome(&'a DocId),
    LastOutcome(&'a DocId),
    ReadHistory(&'a DocId),
    SnapshotAtOrBefore(&'a DocId),
    CreateCheckpoint(&'a Checkpoint),
    ListCheckpoints(&'a DocId),
}

/// What an [`Intercepted`] store does around each call of its inner store.
#[async_trait]
pub trait Intercept: Send + Sync {
    /// Runs before the call reaches the inner store; an error is the call's answer, and the inner
    /// store is not asked.
    async fn before(&self, _call: Call<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Runs once the inner store answered, with whether it failed.
    fn after(&self, _call: Call<'_>, _outcome: Result<(), &StoreError>) {}
}

/// Hooks shared with the test or service that reads what they recorded.
#[async_trait]
impl<T: Intercept + ?Sized> Intercept for Arc<T> {
    async fn before(&self, call: Call<'_>) -> Result<(), StoreError> {
        (**self).before(call).await
    }

    fn after(&self, call: Call<'_>, outcome: Result<(), &StoreError>) {
        (**self).after(call, outcome);
    }
}

/// `inner` with `hooks` around every call.
pub struct Intercepted<I> {
    inner: Arc<dyn EventStore>,
    hooks: I,
}

impl<I: Intercept> Intercepted<I> {
    pub fn new(inner: Arc<dyn EventStore>, hooks: I) -> Self {
        Self { inner, hooks }
    }

    /// The hooks, for what they recorded.
    pub fn hooks(&self) -> &I {
        &self.hooks
    }

    /// The store behind the hooks.
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    async fn around<T>(
        &self,
        call: Call<'_>,
        answer: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        self.hooks.before(call).await?;
        let result = answer.await;
        self.hooks.after(call, result.as_ref().map(|_| ()));
        result
    }
}

#[async_trait]
impl<I: Intercept + 'static> EventStore for Intercepted<I> {
    async fn claim_partition(&self, partition: PartitionId) -> Result<PartitionClaim, StoreError> {
        self.around(Call::ClaimPartition(partition), self.inner.claim_partition(partition)).await
    }

    async fn commit(&self, batch: &CommitBatch) -> Result<u64, StoreError> {
        self.around(Call::Commit(batch), self.inner.commit(batch)).await
    }

    async fn mark_published(
        &self,
        partition: PartitionId,
        epoch: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        let call = Call::MarkPublished { partition, epoch, through };
        self.around(call, self.inner.mark_published(partition, epoch, through)).await
    }

    async fn unpublished(
        &self,
        partition: PartitionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UnpublishedCommit>, StoreError> {
        self.around(Call::Unpublished(partition), self.inner.unpublished(partition, after, limit)).await
    }

    async fn latest_version(&self, doc: &DocId) -> Result<u64, StoreError> {
        self.around(Call::LatestVersion(doc), self.inner.latest_version(doc)).await
    }

    async fn read_events(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<CommittedEvent>, StoreError> {
        self.around(Call::ReadEvents(doc), self.inner.read_events(doc, after, up_to, limit)).await
    }

    async fn load_document(&self, doc: &DocId) -> Result<StoredDocument, StoreError> {
        self.around(Call::LoadDocument(doc), self.inner.load_document(doc)).await
    }

    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.around(Call::WriteSnapshot(snapshot), self.inner.write_snapshot(snapshot)).await
    }

    async fn find_outcome(
        &self,
        doc: &DocId,
        client: &ClientId,
        seq: u64,
    ) -> Result<Option<Outcome>, StoreError> {
        self.around(Call::FindOutcome(doc), self.inner.find_outcome(doc, client, seq)).await
    }

    async fn last_outcome(&self, doc: &DocId, client: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        self.around(Call::LastOutcome(doc), self.inner.last_outcome(doc, client)).await
    }

    async fn read_history(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.around(Call::ReadHistory(doc), self.inner.read_history(doc, after, up_to, limit)).await
    }

    async fn snapshot_at_or_before(&self, doc: &DocId, version: u64) -> Result<Option<Snapshot>, StoreError> {
        self.around(Call::SnapshotAtOrBefore(doc), self.inner.snapshot_at_or_before(doc, version)).await
    }

    async fn create_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, StoreError> {
        self.around(Call::CreateCheckpoint(checkpoint), self.inner.create_checkpoint(checkpoint)).await
    }

    async fn list_checkpoints(&self, doc: &DocId) -> Result<Vec<Checkpoint>, StoreError> {
        self.around(Call::ListCheckpoints(doc), self.inner.list_checkpoints(doc)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::embedded::{SqliteOptions, SqliteStore};

    /// Refuses every claim, and writes down each call it saw after the inner store answered.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    #[async_trait]
    impl Intercept for Log {
        async fn before(&self, call: Call<'_>) -> Result<(), StoreError> {
            match call {
                Call::ClaimPartition(_) => Err(StoreError::Unavailable("refused by the hook".into())),
                _ => Ok(()),
            }
        }

        fn after(&self, call: Call<'_>, outcome: Result<(), &StoreError>) {
            self.0.lock().unwrap().push(format!("{call:?} failed: {}", outcome.is_err()));
        }
    }

    #[tokio::test]
    async fn calls_go_through_the_hooks_to_the_inner_store() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(dir.path(), SqliteOptions { synchronous_full: false }).unwrap();
        let store = Intercepted::new(Arc::new(inner), Log::default());
        let refused = store.claim_partition(0).await.unwrap_err();
        assert!(
            matches!(&refused, StoreError::Unavailable(why) if why == "refused by the hook"),
            "{refused:?}"
        );
        let doc = DocId::parse("d").unwrap();
        assert_eq!(store.latest_version(&doc).await.unwrap(), 0);
        assert_eq!(store.inner().claim_partition(0).await.unwrap().epoch, 1, "the refused claim never ran");
        let log = store.hooks().0.lock().unwrap().clone();
        assert_eq!(log, [format!("LatestVersion({doc:?}) failed: false")], "a refused call has no after");
    }
}
