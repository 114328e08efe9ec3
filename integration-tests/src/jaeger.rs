//! A real OTLP receiver for the tracing tests: Jaeger v2 (all-in-one, traces in memory), on free
//! ports, stopped when dropped, also when the test fails. Built once by `deploy/jaeger.sh install`
//! (`make test` runs it); `TANDEM_JAEGER_BIN` names another binary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::free_port;
use crate::http_get;

/// A running Jaeger.
pub struct Jaeger {
    child: Child,
    otlp: String,
    query: String,
    dir: tempfile::TempDir,
}

impl Jaeger {
    /// Starts Jaeger and waits until its query API answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a folder for Jaeger's config");
        let (otlp, query, query_grpc) = (free_address(), free_address(), free_address());
        let config = dir.path().join("jaeger.yaml");
        std::fs::write(&config, config_yaml(&otlp, &query, &query_grpc)).expect("write Jaeger's config");
        let log = std::fs::File::create(dir.path().join("jaeger.log")).expect("Jaeger's log file");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start Jaeger");
        let mut jaeger = Self { child, otlp, query, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&jaeger.query, "/api/services").map(|r| r.0) != Some(200) {
            if let Ok(Some(status)) = jaeger.child.try_wait() {
                panic!("Jaeger exited at start ({status}):\n{}", jaeger.log());
            }
            assert!(Instant::now() < deadline, "Jaeger's query API did not answer:\n{}", jaeger.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        jaeger
    }

    /// The `OTEL_EXPORTER_OTLP_ENDPOINT` of its OTLP/HTTP receiver.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.otlp)
    }

    /// What Jaeger logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jaeger.log")).unwrap_or_default()
    }

    /// The traces holding a span of `service` named `operation` with the tag `key` = `value`, as
    /// the query API (`GET /api/traces`) returns them.
    pub fn traces(&self, service: &str, operation: &str, key: &str, value: &str) -> Vec<Trace> {
        let tags = serde_json::json!({ key: value }).to_string();
        let path = format!(
            "/api/traces?service={}&operation={}&tags={}&limit=100&lookback=1h",
            encode(service),
            encode(operation),
            encode(&tags)
        );
        let Some((200, body)) = http_get(&self.query, &path) else { return Vec::new() };
        let body: Value = serde_json::from_str(&body).expect("the query API answers JSON");
        body["data"]
            .as_array()
            .map(|traces| traces.iter().map(Trace::from_json).collect())
            .unwrap_or_default()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One trace: its spans, with their process's service name and instance.
#[derive(Debug, Clone)]
pub struct Trace {
    pub id: String,
    pub spans: Vec<Span>,
}

#[derive(Debug, Clone)]
pub struct Span {
    pub id: String,
    /// The span it is a child of (`CHILD_OF` reference), if any.
    pub parent: Option<String>,
    pub operation: String,
    /// `service.name` of the process that sent it.
    pub service: String,
    /// `service.instance.id` of that process, if it has one.
    pub instance: Option<String>,
    /// The span's attributes, as strings.
    pub tags: BTreeMap<String, String>,
}

impl Trace {
    fn from_json(trace: &Value) -> Self {
        let processes = &trace["processes"];
        let spans = trace["spans"]
            .as_array()
            .map(|spans| {
                spans
                    .iter()
                    .map(|span| {
                        let process = &processes[span["processID"].as_str().unwrap_or_default()];
                        let instance = tag_list(&process["tags"]).remove("service.instance.id");
                        Span {
                            id: span["spanID"].as_str().unwrap_or_default().to_owned(),
                            parent: span["references"].as_array().and_then(|refs| {
                                refs.iter()
                                    .find(|r| r["refType"] == "CHILD_OF")
                                    .and_then(|r| r["spanID"].as_str().map(str::to_owned))
                            }),
                            operation: span["operationName"].as_str().unwrap_or_default().to_owned(),
                            service: process["serviceName"].as_str().unwrap_or_default().to_owned(),
                            instance,
                            tags: tag_list(&span["tags"]),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { id: trace["traceID"].as_str().unwrap_or_default().to_owned(), spans }
    }

    /// The spans named `operation`.
    pub fn named(&self, operation: &str) -> Vec<&Span> {
        self.spans.iter().filter(|s| s.operation == operation).collect()
    }

    /// The one span named `operation`; fails when there is not exactly one.
    pub fn only(&self, operation: &str) -> &Span {
        let found = self.named(operation);
        assert_eq!(found.len(), 1, "spans named {operation:?} in {}", self.outline());
        found[0]
    }

    /// The span with this id.
    pub fn span(&self, id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.id == id)
    }

    /// One line per span: operation, process, parent's operation, for failure messages.
    pub fn outline(&self) -> String {
        let mut lines = vec![format!("trace {}:", self.id)];
        for span in &self.spans {
            let parent = span.parent.as_deref().and_then(|p| self.span(p)).map(|p| p.operation.as_str());
            lines.push(format!(
                "  {} [{} {}] parent={:?} {:?}",
                span.operation,
                span.service,
                span.instance.as_deref().unwrap_or("-"),
                parent,
                span.tags
            ));
        }
        lines.join("\n")
    }
}

/// `[{key, value}, ...]` as a map of strings.
fn tag_list(tags: &Value) -> BTreeMap<String, String> {
    tags.as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|tag| {
                    let key = tag["key"].as_str()?.to_owned();
                    let value = match &tag["value"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    Some((key, value))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("TANDEM_JAEGER_BIN") {
        return PathBuf::from(bin);
    }
    let script = crate::manifest_dir().join("../deploy/jaeger.sh");
    let output = Command::new("bash").arg(script).arg("path").output().expect("run deploy/jaeger.sh path");
    assert!(
        output.status.success(),
        "Jaeger is not installed: run `deploy/jaeger.sh install` (make test does): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Percent-encodes a query parameter.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Only what the tests use: the OTLP/HTTP receiver, memory storage and the query API, all on
/// loopback ports chosen at run time, and no telemetry of Jaeger's own on fixed ports.
fn config_yaml(otlp: &str, query: &str, query_grpc: &str) -> String {
    format!(
        r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memory
    http:
      endpoint: {query}
    grpc:
      endpoint: {query_grpc}
  jaeger_storage:
    backends:
      memory:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: {otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory
"#
    )
}
