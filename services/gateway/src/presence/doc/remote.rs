//! Announcements of other gateways: held until this gateway has their version, then moved to the
//! newest version and shown to the participants here.

use tandem_protocol::presence::{PresenceFrame, PresenceRecord};
use tandem_protocol::ClientId;
use tokio::time::Instant;
use tracing::debug;

use super::{DocTask, Remote, RemotePresence, Window};
use crate::outbound::Inbound;

impl DocTask {
    pub(super) async fn on_remote(&mut self, (record, expires): RemotePresence, hub: &mut Option<Inbound>) {
        let Some(selection) = record.state.as_ref().and_then(|s| s.selection) else {
            return self.apply_remote(record, expires).await;
        };
        self.drain(hub);
        self.release_parked().await;
        if self.window.as_ref().is_none_or(|w| selection.version > w.last()) {
            // The other gateway saw this version first; this one will see it shortly.
            self.parked.insert(record.client.clone(), (record, expires));
            return;
        }
        self.apply_remote(record, expires).await;
    }

    /// Takes in another gateway's announcement whose version this gateway has seen.
    async fn apply_remote(&mut self, record: PresenceRecord, expires: Instant) {
        let Some(mut state) = record.state.clone() else {
            self.parked.remove(&record.client);
            let owned = self.remotes.get(&record.client).is_some_and(|r| {
                r.record.gateway == record.gateway && r.record.connection == record.connection
            });
            if owned {
                self.remotes.remove(&record.client);
                let left =
                    PresenceFrame::PresenceLeft { doc: self.doc.clone(), client: record.client.clone() };
                self.relay(None, &left);
            }
            return;
        };
        if let Some(selection) = state.selection {
            match self.moved_to_newest(selection).await {
                Ok(moved) => state.selection = Some(moved),
                Err(e) => {
                    debug!(doc = %self.doc, client = %record.client, error = %e, "skipped a remote presence");
                    return;
                }
            }
        }
        let changed =
            self.remotes.get(&record.client).is_none_or(|r| r.state != state || r.record.user != record.user);
        if changed {
            self.relay(None, &PresenceFrame::presence(&self.doc, &record.client, &record.user, &state));
        }
        self.remotes.insert(record.client.clone(), Remote { record, state, expires });
    }

    /// Remote selections whose version has arrived.
    pub(super) async fn release_parked(&mut self) {
        let Some(last) = self.window.as_ref().map(Window::last) else { return };
        let ready: Vec<ClientId> = self
            .parked
            .iter()
            .filter(|(_, (r, _))| {
                r.state.as_ref().and_then(|s| s.selection).is_none_or(|s| s.version <= last)
            })
            .map(|(client, _)| client.clone())
            .collect();
        for client in ready {
            if let Some((record, expires)) = self.parked.remove(&client) {
                self.apply_remote(record, expires).await;
            }
        }
    }
}
