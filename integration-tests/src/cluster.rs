//! A distributed Tandem on loopback: Apache Kafka (the test run's shared broker, or one of the
//! test's own that it may kill and restart), a fresh Postgres database, sequencers and gateways as
//! real processes, each with kill switches. Topics and the sequencers' group are the test's own
//! ([`Namespace`]), so clusters of concurrent tests share a broker without meeting.
//!
//! ```no_run
//! # use tandem_integration_tests::cluster::Cluster;
//! let mut cluster = Cluster::builder().gateways(2).sequencers(2).partitions(4).start();
//! let url = cluster.gateway_ws_url(0);
//! cluster.sequencer(0).kill();
//! ```
//!
//! Everything it starts is stopped when it is dropped, also when a test fails; the database is
//! dropped too.

use std::net::TcpListener;
use std::process::Command;

pub use crate::kafka::{Broker, Namespace};
use crate::postgres::PrivatePostgres;
use crate::process::{binary, ServiceProcess, ServiceSpec};
use crate::proxy::LoopbackProxy;

/// The Postgres server the tests use (trust auth): `TANDEM_TEST_POSTGRES`, else the local one.
pub fn postgres_server_url() -> String {
    std::env::var("TANDEM_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    server: String,
    name: String,
}

impl TestDatabase {
    /// A fresh database on the shared test server.
    pub fn create() -> Self {
        Self::create_on(&postgres_server_url())
    }

    /// A fresh database on the server at `server` (`postgres://user@host:port`).
    pub fn create_on(server: &str) -> Self {
        let name = format!("tandem_it_{}", random_suffix());
        psql(server, "postgres", &format!("CREATE DATABASE {name}"));
        Self { server: server.to_owned(), name }
    }

    /// `postgres://…/NAME`
    pub fn url(&self) -> String {
        format!("{}/{}", self.server.trim_end_matches('/'), self.name)
    }

    /// The URL of this database on another address (`HOST:PORT`), e.g. a proxy's in front of the server.
    pub fn url_via(&self, address: &str) -> String {
        let (scheme_user, _) = self.server.rsplit_once('@').unwrap_or(("postgres://postgres", ""));
        format!("{scheme_user}@{address}/{}", self.name)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs one query and returns its rows, fields separated by `|`.
    pub fn query(&self, sql: &str) -> Vec<String> {
        psql(&self.server, &self.name, sql).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &format!("{}/postgres", self.server)])
            .args(["-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

/// Runs `sql` with psql against `database`; panics with psql's message on failure.
fn psql(server: &str, database: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", &format!("{server}/{database}")])
        .args(["-c", sql])
        .output()
        .expect("psql runs (make test installs PostgreSQL)");
    assert!(output.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("psql prints UTF-8")
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..12).map(|_| char::from(b'a' + rng.gen_range(0..26))).collect()
}

/// A port free right now (the OS picks it; the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Builds a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    gateways: usize,
    sequencers: usize,
    partitions: u32,
    service_token: Option<String>,
    /// The gateways' `--jwt-key-file`; without one they run with `--insecure-no-auth`.
    jwt_key_file: Option<std::path::PathBuf>,
    private_postgres: bool,
    own_broker: bool,
    extra_args: Vec<String>,
    gateway_args: Vec<String>,
    sequencer_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    /// The sequencer that reaches Postgres through a [`LoopbackProxy`] (see [`Cluster::postgres_proxy`]).
    postgres_proxy_for: Option<usize>,
    /// Where the services' logs go instead of a temporary folder.
    logs_dir: Option<std::path::PathBuf>,
}

impl ClusterBuilder {
    /// Runs on a Kafka broker of the cluster's own, which the test may kill and restart
    /// ([`Cluster::broker`]); without it the cluster uses the test run's shared broker.
    pub fn own_broker(mut self) -> Self {
        self.own_broker = true;
        self
    }

    /// A flag given to every sequencer and gateway, e.g. `--kafka-group-protocol consumer`.
    pub fn service_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// A flag given to every sequencer only, e.g. `--snapshot-every 5`.
    pub fn sequencer_arg(mut self, arg: impl Into<String>) -> Self {
        self.sequencer_args.push(arg.into());
        self
    }

    /// An environment variable of every sequencer and gateway, e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn service_env(mut self, name: &str, value: &str) -> Self {
        self.extra_env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A flag given to every gateway only, e.g. `--drain-grace-seconds 3`.
    pub fn gateway_arg(mut self, arg: impl Into<String>) -> Self {
        self.gateway_args.push(arg.into());
        self
    }

    /// Runs the event log on a PostgreSQL server of the cluster's own, which the test may crash
    /// and restart ([`Cluster::postgres`]).
    pub fn private_postgres(mut self) -> Self {
        self.private_postgres = true;
        self
    }

    /// Sequencer `i` reaches Postgres through a loopback proxy the test can turn into a bad network
    /// ([`Cluster::postgres_proxy`]): dropped or stalled connections between it and the database.
    pub fn sequencer_postgres_proxy(mut self, i: usize) -> Self {
        self.postgres_proxy_for = Some(i);
        self
    }

    /// Writes the services' logs (`sequencer-N.log`, `gateway-N.log`) into `dir`, which is kept,
    /// instead of a temporary folder removed with the cluster.
    pub fn logs_dir(mut self, dir: &std::path::Path) -> Self {
        self.logs_dir = Some(dir.to_owned());
        self
    }

    pub fn gateways(mut self, n: usize) -> Self {
        self.gateways = n;
        self
    }

    pub fn sequencers(mut self, n: usize) -> Self {
        self.sequencers = n;
        self
    }

    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }

    pub fn service_token(mut self, token: &str) -> Self {
        self.service_token = Some(token.to_owned());
        self
    }

    /// The gateways require HS256 tokens signed with the secret in `file` (see [`crate::auth::DevKeys`]).
    pub fn jwt_key_file(mut self, file: &std::path::Path) -> Self {
        self.jwt_key_file = Some(file.to_owned());
        self
    }

    /// Starts the broker, the database, the sequencers (in order, each one ready before the next),
    /// then the gateways.
    pub fn start(mut self) -> Cluster {
        // Sequencers always authenticate their callers: a random service token unless the test chose one.
        self.service_token.get_or_insert_with(|| format!("service-{:016x}", rand::random::<u64>()));
        let broker = if self.own_broker { Broker::start() } else { Broker::shared() };
        let namespace = Namespace::new("cluster");
        let private_postgres = self.private_postgres.then(PrivatePostgres::start);
        let database = match &private_postgres {
            Some(server) => TestDatabase::create_on(&server.url()),
            None => TestDatabase::create(),
        };
        let logs = tempfile::tempdir().expect("a folder for the services' logs");
        let logs_path = match &self.logs_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).expect("the logs folder");
                dir.clone()
            }
            None => logs.path().to_owned(),
        };
        let postgres_proxy = self.postgres_proxy_for.map(|i| {
            let server = match &private_postgres {
                Some(server) => server.address(),
                None => postgres_server_url().rsplit_once('@').map(|(_, a)| a.to_owned()).unwrap_or_default(),
            };
            (i, LoopbackProxy::start(&server))
        });
        let mut cluster = Cluster {
            config: self,
            sequencer_http: Vec::new(),
            broker,
            namespace,
            database,
            private_postgres,
            _logs: logs,
            logs_path,
            sequencers: Vec::new(),
            gateways: Vec::new(),
            postgres_proxy,
        };
        for i in 0..cluster.config.sequencers {
            let http = format!("127.0.0.1:{}", free_port());
            let sequencer = cluster.start_sequencer(i, &http);
            cluster.sequencers.push(sequencer);
            cluster.sequencer_http.push(http);
        }
        for i in 0..cluster.config.gateways {
            let gateway = cluster.start_gateway(i);
            cluster.gateways.push(gateway);
        }
        cluster
    }
}

/// A running distributed Tandem.
pub struct Cluster {
    config: ClusterBuilder,
    // Dropped in field order: services first, then the database and the broker they use.
    sequencers: Vec<ServiceProcess>,
    /// Each sequencer's HTTP address (`--metrics-listen`: metrics and health).
    sequencer_http: Vec<String>,
    gateways: Vec<ServiceProcess>,
    postgres_proxy: Option<(usize, LoopbackProxy)>,
    database: TestDatabase,
    private_postgres: Option<PrivatePostgres>,
    broker: Broker,
    namespace: Namespace,
    /// The temporary logs folder (unused with [`ClusterBuilder::logs_dir`]), removed on drop.
    _logs: tempfile::TempDir,
    logs_path: std::path::PathBuf,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            gateways: 1,
            sequencers: 1,
            partitions: 4,
            service_token: None,
            jwt_key_file: None,
            private_postgres: false,
            own_broker: false,
            extra_args: Vec::new(),
            gateway_args: Vec::new(),
            sequencer_args: Vec::new(),
            extra_env: Vec::new(),
            postgres_proxy_for: None,
            logs_dir: None,
        }
    }

    /// `ws://HOST:PORT/v1/ws` of gateway `i`.
    pub fn gateway_ws_url(&self, i: usize) -> String {
        format!("ws://{}/v1/ws", self.gateways[i].address())
    }

    pub fn gateway(&mut self, i: usize) -> &mut ServiceProcess {
        &mut self.gateways[i]
    }

    pub fn sequencer(&mut self, i: usize) -> &mut ServiceProcess {
        &mut self.sequencers[i]
    }

    /// `HOST:PORT` of sequencer `i`'s HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub fn sequencer_http_address(&self, i: usize) -> &str {
        &self.sequencer_http[i]
    }

    pub fn sequencer_count(&self) -> usize {
        self.sequencers.len()
    }

    pub fn gateway_count(&self) -> usize {
        self.gateways.len()
    }

    /// The number of partitions of the cluster's topics (`--partitions`).
    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// Waits until the sequencers have claimed every partition, or panics after `limit` with their
    /// logs. A new cluster's consumer group takes seconds to form, and until a partition is claimed
    /// no op of its documents commits: a test that measures a window of load waits for this first.
    pub async fn wait_until_every_partition_is_claimed(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let logs: Vec<String> = self.sequencers.iter().map(ServiceProcess::log).collect();
            let claimed: std::collections::BTreeSet<u32> =
                logs.iter().flat_map(|log| claimed_partitions(log)).collect();
            if claimed.len() >= self.config.partitions as usize {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "partitions claimed after {limit:?}: {claimed:?} of {}; sequencer logs:\n{}",
                self.config.partitions,
                logs.join("\n-----\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The proxy between one sequencer and Postgres, and that sequencer's index; only with
    /// [`ClusterBuilder::sequencer_postgres_proxy`].
    pub fn postgres_proxy(&self) -> Option<(usize, &LoopbackProxy)> {
        self.postgres_proxy.as_ref().map(|(i, proxy)| (*i, proxy))
    }

    /// The folder of the services' logs.
    pub fn logs_dir(&self) -> &std::path::Path {
        &self.logs_path
    }

    /// The cluster's own PostgreSQL server; only with [`ClusterBuilder::private_postgres`].
    pub fn postgres(&mut self) -> &mut PrivatePostgres {
        self.private_postgres.as_mut().expect("the cluster was built with .private_postgres()")
    }

    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// The cluster's broker; only one started with [`ClusterBuilder::own_broker`] may be killed
    /// or restarted.
    pub fn broker(&mut self) -> &mut Broker {
        &mut self.broker
    }

    /// `127.0.0.1:PORT` of the cluster's broker.
    pub fn broker_address(&self) -> String {
        self.broker.address()
    }

    /// The cluster's topics are `NAMESPACE.ops` and `NAMESPACE.events`.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    fn common_args(&self, instance: String) -> Vec<String> {
        let mut args = vec![
            "--brokers".into(),
            self.broker.address(),
            "--kafka-namespace".into(),
            self.namespace.as_str().to_owned(),
            "--postgres-url".into(),
            self.database.url(),
            "--partitions".into(),
            self.config.partitions.to_string(),
            "--instance".into(),
            instance,
        ];
        args.extend(self.config.extra_args.iter().cloned());
        args
    }

    /// The shared token between gateways and sequencers, in the environment rather than on the command
    /// line (where every user of the machine could read it).
    fn service_token_env(&self) -> (String, String) {
        ("TANDEM_SERVICE_TOKEN".into(), self.config.service_token.clone().unwrap_or_default())
    }

    /// The environment of every service: the service token and the builder's variables.
    fn service_env(&self) -> Vec<(String, String)> {
        let mut env = vec![self.service_token_env()];
        env.extend(self.config.extra_env.iter().cloned());
        env
    }

    fn start_sequencer(&self, i: usize, http: &str) -> ServiceProcess {
        let mut args = vec!["--grpc-listen".to_owned(), format!("127.0.0.1:{}", free_port())];
        args.extend(["--metrics-listen".to_owned(), http.to_owned()]);
        args.extend(self.common_args(format!("sequencer-{i}")));
        args.extend(self.config.sequencer_args.iter().cloned());
        if let Some((_, proxy)) = self.postgres_proxy.as_ref().filter(|(p, _)| *p == i) {
            let at = args.iter().position(|a| a == "--postgres-url").expect("--postgres-url") + 1;
            args[at] = self.database.url_via(proxy.address());
        }
        ServiceProcess::start(ServiceSpec {
            program: binary("tandem-sequencer", "TANDEM_SEQUENCER_BIN"),
            args,
            env: [vec![("TANDEM_LOG".into(), "info".into())], self.service_env()].concat(),
            ready_marker: "grpc listening on ".into(),
            log: Some(self.logs_path.join(format!("sequencer-{i}.log"))),
        })
    }

    fn start_gateway(&self, i: usize) -> ServiceProcess {
        let sequencers: Vec<String> =
            self.sequencers.iter().map(|s| format!("http://{}", s.address())).collect();
        let mut args = vec!["--listen".to_owned(), format!("127.0.0.1:{}", free_port())];
        args.extend(["--sequencer".to_owned(), sequencers.join(",")]);
        args.extend(self.common_args(format!("gateway-{i}")));
        args.extend(self.config.gateway_args.iter().cloned());
        match &self.config.jwt_key_file {
            Some(file) => args.extend(["--jwt-key-file".to_owned(), file.display().to_string()]),
            None => args.push("--insecure-no-auth".to_owned()),
        }
        ServiceProcess::start(ServiceSpec {
            program: binary("tandem-gateway", "TANDEM_GATEWAY_BIN"),
            args,
            env: self.service_env(),
            ready_marker: "listening on http://".into(),
            log: Some(self.logs_path.join(format!("gateway-{i}.log"))),
        })
    }
}

impl Drop for Cluster {
    /// On a failing test, the end of every service's log: the first thing one needs to see.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let services = self
            .sequencers
            .iter()
            .map(|s| ("sequencer", s))
            .chain(self.gateways.iter().map(|g| ("gateway", g)));
        for (i, (kind, service)) in services.enumerate() {
            let log = service.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("----- {kind} (service {i}) log, last {} lines -----", tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The partitions a sequencer's log says it claimed (`partition claimed partition=N`).
fn claimed_partitions(log: &str) -> impl Iterator<Item = u32> + '_ {
    log.lines()
        .filter(|line| line.contains("tandem_sequencer::partition: partition claimed"))
        .filter_map(|line| line.split("partition=").nth(1)?.split_whitespace().next()?.parse().ok())
}
