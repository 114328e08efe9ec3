//! `tandem_gateway_errors_total{code}`: every error frame the gateway sends a client, by the
//! protocol's error code (docs/PROTOCOL.md), so a dashboard shows what clients are told, not only
//! what the gateway noticed.

use tandem_protocol::ws::ServerMessage;

/// Counts `message` if it is an error frame; every path that sends one calls this.
pub(crate) fn count(message: &ServerMessage) {
    if let ServerMessage::Error { code, .. } = message {
        metrics::counter!("tandem_gateway_errors_total", "code" => code.as_str()).increment(1);
    }
}
