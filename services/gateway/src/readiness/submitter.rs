//! Whether the op log takes this gateway's ops: the outcome of the latest submits.
//!
//! There is no cheap way to ask the sequencer service without submitting, so the gateway judges by
//! the submits it makes anyway (the connections' and its own resubmissions). One refusal is
//! ordinary backpressure (a full partition for a moment), so only several in a row count. And a
//! failure is held against the submitter for a while only: a gateway out of its load balancer gets
//! no ops, so it would never see the success that makes it ready again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tandem_bus::{BusError, OpSubmitter};
use tandem_protocol::records::Submission;
use tokio::time::Instant;

/// Failed submits in a row that make the submitter not ready.
const FAILURES_IN_A_ROW: u32 = 3;
/// How long those failures make it not ready without a later success.
const FAILURES_COUNT_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct SubmitterHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures_in_a_row: u32,
    /// When the latest failure happened, and why.
    last_failure: Option<(Instant, String)>,
}

impl SubmitterHealth {
    fn record(&self, result: &Result<(), BusError>) {
        let mut state = self.state.lock().expect("submitter health lock");
        match result {
            // A refused op was answered by a working op log: the op was at fault, not the path to it.
            Ok(()) | Err(BusError::Refused { .. }) => state.failures_in_a_row = 0,
            Err(e) => {
                state.failures_in_a_row += 1;
                state.last_failure = Some((Instant::now(), e.to_string()));
            }
        }
    }

    pub fn check(&self) -> Result<(), String> {
        let state = self.state.lock().expect("submitter health lock");
        match &state.last_failure {
            Some((at, why))
                if state.failures_in_a_row >= FAILURES_IN_A_ROW && at.elapsed() < FAILURES_COUNT_FOR =>
            {
                Err(format!(
                    "the last {} submits failed, the latest {:.1} s ago: {why}",
                    state.failures_in_a_row,
                    at.elapsed().as_secs_f64()
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The gateway's submitter, recording the outcome of every submit in [`SubmitterHealth`].
pub(crate) struct ObservedSubmitter {
    inner: Arc<dyn OpSubmitter>,
    health: Arc<SubmitterHealth>,
}

impl ObservedSubmitter {
    pub fn new(inner: Arc<dyn OpSubmitter>, health: Arc<SubmitterHealth>) -> Self {
        Self { inner, health }
    }
}

#[async_trait]
impl OpSubmitter for ObservedSubmitter {
    async fn submit(&self, submission: Submission) -> Result<(), BusError> {
        let result = self.inner.submit(submission).await;
        self.health.record(&result);
        result
    }
}

#[cfg(test)]
mod tests {
    use tandem_protocol::ErrorCode;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn several_failures_in_a_row_count_for_a_while() {
        let health = SubmitterHealth::default();
        let refused = Err(BusError::Unavailable("partition 0 is full".into()));
        health.record(&refused);
        health.record(&refused);
        assert!(health.check().is_ok(), "two refusals are backpressure");
        health.record(&refused);
        let why = health.check().unwrap_err();
        assert!(why.contains("the last 3 submits failed") && why.contains("partition 0 is full"), "{why}");
        tokio::time::advance(FAILURES_COUNT_FOR).await;
        assert!(health.check().is_ok(), "without traffic the failures expire");
        health.record(&refused);
        assert!(health.check().is_err());
        health.record(&Ok(()));
        assert!(health.check().is_ok(), "a success clears them");
    }

    #[tokio::test(start_paused = true)]
    async fn refused_ops_do_not_count_as_failures() {
        let health = SubmitterHealth::default();
        let forbidden =
            Err(BusError::Refused { code: ErrorCode::Forbidden, message: "may not write".into() });
        for _ in 0..FAILURES_IN_A_ROW {
            health.record(&forbidden);
        }
        assert!(health.check().is_ok(), "the op log answered every one of them");
    }
}
