//! Whether the event store answers: catch-up and gap repair read it, so a gateway without it
//! cannot open documents or fill gaps.
//!
//! Every store call of the gateway is observed on its way ([`ObservedStore`]). A recent success
//! answers the question for free; otherwise (an idle gateway, or a failure since) `/readyz` asks the
//! store one cheap question, the latest version of one document, and at most one such probe runs at
//! a time however many `/readyz` requests arrive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tandem_protocol::DocId;
use tandem_store::intercept::{Call, Intercept, Intercepted};
use tandem_store::{EventStore, StoreError};
use tokio::time::Instant;

/// A success this recent needs no probe.
const RECENT: Duration = Duration::from_secs(2);
/// The longest a probe may take before the store counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The document the probe asks about; it need not exist.
const PROBE_DOC: &str = "tandem.readyz";

#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    /// The latest store call to finish: when, and why it failed if it did.
    last: Mutex<Option<(Instant, Option<String>)>>,
    /// Store calls finished so far, to tell whether one finished while a request waited.
    finished: AtomicU64,
    /// Held by the probe in progress.
    probing: tokio::sync::Mutex<()>,
}

impl StoreHealth {
    /// Only `Unavailable` says the store is not there: any other answer came from a working store.
    fn record(&self, outcome: Result<(), &StoreError>) {
        let failure = match outcome {
            Err(e @ StoreError::Unavailable(_)) => Some(e.to_string()),
            _ => None,
        };
        self.set(failure);
    }

    fn set(&self, failure: Option<String>) {
        let mut last = self.last.lock().expect("store health lock");
        *last = Some((Instant::now(), failure));
        self.finished.fetch_add(1, Ordering::AcqRel);
    }

    /// Ready when the latest call succeeded recently, or else when a probe through `store` (the
    /// observed store, so the probe's outcome is recorded like any call's) succeeds.
    pub async fn check(&self, store: &dyn EventStore) -> Result<(), String> {
        let finished = self.finished.load(Ordering::Acquire);
        if matches!(self.latest(), Some((at, None)) if at.elapsed() < RECENT) {
            return Ok(());
        }
        let _probing = self.probing.lock().await;
        // A probe (or any call) that finished while this request waited answers for it too.
        if self.finished.load(Ordering::Acquire) == finished {
            let doc = DocId::parse(PROBE_DOC).expect("a valid document id");
            if tokio::time::timeout(PROBE_TIMEOUT, store.latest_version(&doc)).await.is_err() {
                self.set(Some(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())));
            }
        }
        match self.latest() {
            Some((at, Some(why))) => Err(Self::failed(at, &why)),
            _ => Ok(()),
        }
    }

    fn latest(&self) -> Option<(Instant, Option<String>)> {
        self.last.lock().expect("store health lock").clone()
    }

    fn failed(at: Instant, why: &str) -> String {
        format!("the latest call failed {:.1} s ago: {why}", at.elapsed().as_secs_f64())
    }
}

/// The gateway's event store, recording the outcome of every call in [`StoreHealth`].
pub(crate) type ObservedStore = Intercepted<Observer>;

pub(crate) fn observed(inner: Arc<dyn EventStore>, health: Arc<StoreHealth>) -> ObservedStore {
    Intercepted::new(inner, Observer(health))
}

/// Hands the outcome of each store call to [`StoreHealth`].
pub(crate) struct Observer(Arc<StoreHealth>);

#[async_trait]
impl Intercept for Observer {
    fn after(&self, _call: Call<'_>, outcome: Result<(), &StoreError>) {
        self.0.record(outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU8;

    use tandem_protocol::records::{CommittedEvent, Outcome};
    use tandem_protocol::ClientId;
    use tandem_store::{
        ClientRecord, CommitBatch, PartitionClaim, PartitionId, Snapshot, StoredDocument, UnpublishedCommit,
    };

    use super::*;

    /// Answers `latest_version` as told: 0 works, 1 fails, 2 never answers. Nothing else is called.
    #[derive(Default)]
    struct Probed(AtomicU8);

    #[async_trait]
    impl EventStore for Probed {
        async fn claim_partition(&self, _: PartitionId) -> Result<PartitionClaim, StoreError> {
            unreachable!()
        }
        async fn commit(&self, _: &CommitBatch) -> Result<u64, StoreError> {
            unreachable!()
        }
        async fn mark_published(&self, _: PartitionId, _: u64, _: u64) -> Result<(), StoreError> {
            unreachable!()
        }
        async fn unpublished(
            &self,
            _: PartitionId,
            _: u64,
            _: usize,
        ) -> Result<Vec<UnpublishedCommit>, StoreError> {
            unreachable!()
        }
        async fn last_outcome(&self, _: &DocId, _: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
            Ok(None)
        }

        async fn read_history(
            &self,
            _: &DocId,
            _: u64,
            _: u64,
            _: usize,
        ) -> Result<Vec<tandem_store::HistoryEntry>, StoreError> {
            unreachable!("not called by these tests")
        }

        async fn snapshot_at_or_before(
            &self,
            _: &DocId,
            _: u64,
        ) -> Result<Option<tandem_store::Snapshot>, StoreError> {
            unreachable!("not called by these tests")
        }

        async fn create_checkpoint(
            &self,
            _: &tandem_store::Checkpoint,
        ) -> Result<tandem_store::Checkpoint, StoreError> {
            unreachable!("not called by these tests")
        }

        async fn list_checkpoints(&self, _: &DocId) -> Result<Vec<tandem_store::Checkpoint>, StoreError> {
            unreachable!("not called by these tests")
        }
        async fn latest_version(&self, _: &DocId) -> Result<u64, StoreError> {
            match self.0.load(Ordering::SeqCst) {
                0 => Ok(0),
                1 => Err(StoreError::Unavailable("connection refused".into())),
                _ => std::future::pending().await,
            }
        }
        async fn read_events(
            &self,
            _: &DocId,
            _: u64,
            _: u64,
            _: usize,
        ) -> Result<Vec<CommittedEvent>, StoreError> {
            unreachable!()
        }
        async fn load_document(&self, _: &DocId) -> Result<StoredDocument, StoreError> {
            unreachable!()
        }
        async fn write_snapshot(&self, _: &Snapshot) -> Result<(), StoreError> {
            unreachable!()
        }
        async fn find_outcome(&self, _: &DocId, _: &ClientId, _: u64) -> Result<Option<Outcome>, StoreError> {
            unreachable!()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_answers_when_no_call_succeeded_recently() {
        let inner = Arc::new(Probed::default());
        let health = Arc::new(StoreHealth::default());
        let store = observed(inner.clone(), health.clone());
        assert_eq!(health.check(&store).await, Ok(()), "the probe works");

        inner.0.store(1, Ordering::SeqCst);
        assert_eq!(health.check(&store).await, Ok(()), "a recent success needs no probe");
        tokio::time::advance(RECENT).await;
        let why = health.check(&store).await.unwrap_err();
        assert!(why.contains("connection refused"), "{why}");

        inner.0.store(2, Ordering::SeqCst);
        let why = health.check(&store).await.unwrap_err();
        assert!(why.contains("no answer within 1000 ms"), "{why}");

        inner.0.store(0, Ordering::SeqCst);
        assert_eq!(health.check(&store).await, Ok(()), "the store is back");
    }
}
