//! The record router: reads the sequenced record stream and hands each record to its document's
//! task (see [`crate::hub`]).
//!
//! The stream is the only way acks and other clients' ops reach this gateway, so an ended stream
//! (`next` answers `None`: the broker's reader could not be opened, the in-process bus closed) must
//! not leave the gateway serving in silence. The router opens a new one, retrying with a growing
//! pause while that fails, and then marks every open document lagged: the records published while no
//! stream was open are lost to this gateway, and each document fills the gap from the event store.
//! Meanwhile `/readyz` says no stream is open.

use std::sync::Arc;
use std::time::Duration;

use tandem_bus::{Delivery, EventStream, EventSubscriber};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::hub::Hubs;
use crate::readiness::EventsHealth;

/// The pause before the first resubscription; it doubles after each stream that ends at once.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest pause between resubscriptions.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Routes records from `stream` (already open, so that it sees every record published since the
/// gateway started), then from each stream opened after it, until `shutdown`.
pub(crate) async fn route_records(
    subscriber: Arc<dyn EventSubscriber>,
    mut stream: Box<dyn EventStream>,
    hubs: Arc<Hubs>,
    health: Arc<EventsHealth>,
    shutdown: CancellationToken,
) {
    let mut retry = FIRST_RETRY;
    loop {
        health.opened();
        let opened = Instant::now();
        let Some(delivered) = route(&mut *stream, &hubs, &shutdown).await else { return };
        health.ended();
        // A stream that worked for a while starts the pauses over; one that ends at once (a broker
        // that cannot be reached) makes them grow.
        if delivered || opened.elapsed() >= LAST_RETRY {
            retry = FIRST_RETRY;
        }
        stream = loop {
            warn!(retry_in_ms = retry.as_millis() as u64, "the record stream ended; resubscribing");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(LAST_RETRY);
            metrics::counter!("tandem_gateway_record_stream_resubscriptions_total").increment(1);
            // `subscribe` may block (the Kafka reader asks the broker for end offsets).
            let subscriber = subscriber.clone();
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return,
                subscribed = tokio::task::spawn_blocking(move || subscriber.subscribe()) => subscribed,
            };
            match subscribed {
                Ok(stream) => break stream,
                Err(e) => error!(error = %e, "subscribing to the record stream failed"),
            }
        };
        info!("record stream reopened; repairing open documents from the store");
        // Only now: a repair before the new stream is open could miss what is published in between.
        hubs.mark_all_lagged();
    }
}

/// Routes one stream's records until it ends (`Some(whether it delivered anything)`) or `shutdown`
/// (`None`).
async fn route(stream: &mut dyn EventStream, hubs: &Hubs, shutdown: &CancellationToken) -> Option<bool> {
    let mut delivered = false;
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => return None,
            delivery = stream.next() => delivery,
        };
        match delivery {
            Some(Delivery::Record { record, traceparent }) => hubs.dispatch(record, traceparent),
            Some(Delivery::Lagged(missed)) => {
                warn!(missed, "record stream lagged; repairing open documents from the store");
                hubs.mark_all_lagged();
            }
            None => return Some(delivered),
        }
        delivered = true;
    }
}
