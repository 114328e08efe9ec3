//! The demo page in headless Chromium on a real cluster (Kafka, Postgres, two sequencers, two
//! gateways): runs integration-tests/browser/cluster-demo.test.mjs (`node --test`) with page A on
//! gateway A and page B on gateway B: editing together, each page showing the other's caret on the
//! right character, a page reloaded while offline delivering its edits once, and undo on one page
//! reverting only its own edit while the other types on. Passes only if node
//! does; node's output (the test report, where the screenshots are) is printed.
//!
//! Needs Node.js, Debian's Chromium and the browser tests' npm packages: `make deps` installs them
//! (deploy/install-browser-test-deps.sh). Missing ones fail the test with how to install them: a
//! browser test that is skipped silently would be a test that cannot fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use tandem_integration_tests::cluster::Cluster;

fn browser_tests_dir() -> PathBuf {
    tandem_integration_tests::manifest_dir().join("browser")
}

/// `http://HOST:PORT` of gateway `i` (its WebSocket URL without scheme and path).
fn http_url(cluster: &Cluster, i: usize) -> String {
    let ws = cluster.gateway_ws_url(i);
    let host = ws.trim_start_matches("ws://").trim_end_matches("/v1/ws");
    format!("http://{host}")
}

#[test]
fn the_demo_page_on_two_gateways_in_chromium() {
    let dir = browser_tests_dir();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: the browser tests need Debian's Chromium (make deps, or deploy/install-browser-test-deps.sh)"
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "{}/node_modules/playwright-core is missing: run deploy/install-browser-test-deps.sh (make deps does)",
        dir.display()
    );

    let cluster = Cluster::builder().gateways(2).sequencers(2).partitions(4).start();
    let (url_a, url_b) = (http_url(&cluster, 0), http_url(&cluster, 1));
    let output = Command::new("node")
        .args(["--test", "--test-concurrency=1", "cluster-demo.test.mjs"])
        .current_dir(&dir)
        .env("TANDEM_URL_A", &url_a)
        .env("TANDEM_URL_B", &url_b)
        .output()
        .expect("node runs (make deps installs Node.js)");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("node --test cluster-demo.test.mjs (A {url_a}, B {url_b}):\n{report}");
    assert!(output.status.success(), "the cluster browser test failed ({}):\n{report}", output.status);
    // node --test passes a file without tests too: make sure every test ran.
    assert!(
        report.contains("# pass 4") && report.contains("# fail 0"),
        "expected 4 passing tests:\n{report}"
    );
}
