//! The `broker` probe: what one Kafka hop costs on its own, without Tandem around it.
//!
//! Tandem's own bus code does the work, exactly as on the op path: a [`KafkaEventPublisher`] (the
//! partition owner's producer: acks=all, one request in flight) publishes one committed record at a
//! time, at a steady rate, into a fresh events topic, and a [`KafkaEventSubscriber`] stream (a
//! gateway's reader) receives them. For each record it measures the publish (until the broker
//! acknowledged it) and the hop (until the reader had it), and reports both per step of records
//! already stored: a broker whose cost grows with what it stores shows it here, row by row.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tandem_bus::kafka::{ensure_topics, KafkaConfig, KafkaEventPublisher, KafkaEventSubscriber};
use tandem_bus::{Delivery, EventPublisher, EventSubscriber};
use tandem_client::{ClientId, DocId, Operation};
use tandem_protocol::records::{CommittedEvent, SequencedRecord};
use tokio::sync::mpsc;

use crate::recorder;

/// How long the reader gets to deliver the last records once the publishing is over.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The probe's parameters; validated (see [`crate::cli::BrokerArgs::validate`]).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub brokers: String,
    /// Records published, one per request.
    pub records: u64,
    /// Records per second.
    pub rate: f64,
    /// Records per row of the report.
    pub step: u64,
    /// The consumer's `fetch.wait.max.ms` and the producer's `linger.ms`, as the services take them.
    pub fetch_wait: Duration,
    pub linger: Duration,
    pub progress: bool,
}

/// One row: the records published while the partition held `stored_before` to `stored_after`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerStep {
    pub stored_before: u64,
    pub stored_after: u64,
    pub publish_p50_ms: f64,
    pub publish_p99_ms: f64,
    pub hop_p50_ms: f64,
    pub hop_p99_ms: f64,
    /// Records of this step the reader received (the others count as lost).
    pub arrived: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerReport {
    pub brokers: String,
    pub records: u64,
    pub rate: f64,
    /// The rate the publishing kept up (one publish waits for the previous one).
    pub achieved_rate: f64,
    pub fetch_wait_ms: u64,
    pub linger_ms: u64,
    pub steps: Vec<BrokerStep>,
    /// Records the reader never received.
    pub lost: u64,
}

impl BrokerReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "broker {} — {} records at {} /s, one per request; fetch wait {} ms, linger {} ms",
            self.brokers, self.records, self.rate, self.fetch_wait_ms, self.linger_ms
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| records stored | publish p50 ms | publish p99 ms | hop p50 ms | hop p99 ms | arrived |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for s in &self.steps {
            let _ = writeln!(
                out,
                "| {}–{} | {:.2} | {:.2} | {:.2} | {:.2} | {} of {} |",
                s.stored_before,
                s.stored_after,
                s.publish_p50_ms,
                s.publish_p99_ms,
                s.hop_p50_ms,
                s.hop_p99_ms,
                s.arrived,
                s.stored_after - s.stored_before
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "published at {:.0} records/s; records that never arrived within {} s: {}",
            self.achieved_rate,
            DRAIN_TIMEOUT.as_secs(),
            self.lost
        );
        out
    }
}

pub async fn run(config: &BrokerConfig) -> anyhow::Result<BrokerReport> {
    let run_id: u32 = rand::random();
    let kafka = KafkaConfig {
        brokers: config.brokers.clone(),
        ops_topic: format!("tandem.probe.{run_id:08x}.unused"),
        events_topic: format!("tandem.probe.{run_id:08x}"),
        partitions: 1,
        client_id: "tandem-loadgen-probe".to_owned(),
        fetch_wait: config.fetch_wait,
        linger: config.linger,
        ..KafkaConfig::default()
    };
    ensure_topics(&kafka).await.context("create the probe's topics")?;
    let publisher = KafkaEventPublisher::new(&kafka).context("create the producer")?;
    let subscriber = KafkaEventSubscriber::new(&kafka);
    // The reader starts at the end of the (empty) topic before anything is published.
    let mut stream = subscriber.subscribe();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<(u64, Instant)>();
    let reader = tokio::spawn(async move {
        while let Some(delivery) = stream.next().await {
            if let Delivery::Record { record, .. } = delivery {
                if let SequencedRecord::Committed(event) = &*record {
                    if arrived_tx.send((event.version, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }
    });

    let doc = DocId::parse("probe").context("the probe's document id")?;
    let client = ClientId::parse("probe").context("the probe's client id")?;
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut report = BrokerReport {
        brokers: config.brokers.clone(),
        records: config.records,
        rate: config.rate,
        fetch_wait_ms: config.fetch_wait.as_millis() as u64,
        linger_ms: config.linger.as_millis() as u64,
        ..BrokerReport::default()
    };
    // One pair of histograms per step, by the record's number: a record that arrives late still
    // counts in the step it was published in.
    let steps = config.records.div_ceil(config.step) as usize;
    let mut publish: Vec<Histogram<u64>> = (0..steps).map(|_| recorder::histogram()).collect();
    let mut hop: Vec<Histogram<u64>> = (0..steps).map(|_| recorder::histogram()).collect();
    let step_of = |version: u64| ((version - 1) / config.step) as usize;
    let mut take_arrival = |sent: &mut HashMap<u64, Instant>, (v, at): (u64, Instant)| {
        if let Some(start) = sent.remove(&v) {
            record_between(&mut hop[step_of(v)], start, at);
        }
    };
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    for version in 1..=config.records {
        ticks.tick().await;
        let op = Operation::from_patch((version - 1) as usize, (version - 1) as usize, 0, "x")
            .context("build the probe's op")?;
        let record = SequencedRecord::Committed(CommittedEvent {
            author: String::new(),
            doc: doc.clone(),
            version,
            client: client.clone(),
            seq: version,
            op,
        });
        let start = Instant::now();
        sent.insert(version, start);
        publisher.publish(vec![record.into()]).await.with_context(|| format!("publish record {version}"))?;
        record_between(&mut publish[step_of(version)], start, Instant::now());
        while let Ok(arrival) = arrived.try_recv() {
            take_arrival(&mut sent, arrival);
        }
        if config.progress && (version % config.step == 0 || version == config.records) {
            let p = &publish[step_of(version)];
            eprintln!(
                "broker: {version} records published; this step's publish p50 {:.2} ms p99 {:.2} ms, \
                 {} records on their way",
                ms(p, 0.5),
                ms(p, 0.99),
                sent.len()
            );
        }
    }
    report.achieved_rate = config.records as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while !sent.is_empty() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), arrived.recv()).await {
            Ok(Some(arrival)) => take_arrival(&mut sent, arrival),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    for (i, (p, h)) in publish.iter().zip(&hop).enumerate() {
        let stored_before = i as u64 * config.step;
        report.steps.push(BrokerStep {
            stored_before,
            stored_after: (stored_before + config.step).min(config.records),
            publish_p50_ms: ms(p, 0.5),
            publish_p99_ms: ms(p, 0.99),
            hop_p50_ms: ms(h, 0.5),
            hop_p99_ms: ms(h, 0.99),
            arrived: h.len(),
        });
    }
    report.lost = sent.len() as u64;
    reader.abort();
    Ok(report)
}

fn record_between(h: &mut Histogram<u64>, start: Instant, end: Instant) {
    let micros = u64::try_from(end.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(micros.max(1));
}

fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(quantile) as f64 / 1000.0
    }
}
