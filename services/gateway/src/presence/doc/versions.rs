//! Checking a selection against the version it names, and moving it to the newest one.

use tandem_protocol::presence::Selection;
use tandem_protocol::{ErrorCode, ProtocolError};
use tracing::warn;

use super::{DocTask, Shape, Window};

impl DocTask {
    /// Checks a selection against the text of the version it names and moves it to the newest
    /// version; the error names the limit that was crossed.
    pub(super) async fn moved_to_newest(&mut self, s: Selection) -> Result<Selection, ProtocolError> {
        let lag_limit = self.presences.config.max_version_lag;
        let Some(window) = &self.window else {
            return Err(ProtocolError::new(
                ErrorCode::Unavailable,
                "the document cannot be read now; send the presence again later",
            ));
        };
        let last = window.last();
        if s.version > last {
            return Err(ProtocolError::bad_request(format!(
                "the selection names version {}, but the document is at version {last}",
                s.version
            )));
        }
        if last - s.version > lag_limit {
            return Err(ProtocolError::bad_request(format!(
                "the selection names version {}, {} versions behind the document (at version {last}); \
                 the limit is {lag_limit}: send it in a newer version",
                s.version,
                last - s.version
            )));
        }
        if s.version < window.first() {
            self.extend_back(s.version).await?;
        }
        let window = self.window.as_ref().expect("checked above");
        let len = window.len_at(s.version).expect("the window covers it");
        if s.anchor > len || s.head > len {
            return Err(ProtocolError::bad_request(format!(
                "the selection (anchor {}, head {}) is outside version {} of the document, whose text is {len} \
                 characters long; anchor and head must be at most {len}",
                s.anchor, s.head, s.version
            )));
        }
        let anchor = window.to_last(s.version, s.anchor).expect("covered");
        let head = window.to_last(s.version, s.head).expect("covered");
        Ok(Selection { version: last, anchor, head })
    }

    /// Reads the versions from `version` up to the window's oldest from the event store.
    async fn extend_back(&mut self, version: u64) -> Result<(), ProtocolError> {
        let first = self.window.as_ref().map_or(0, Window::first);
        let page = self.presences.gateway_config.catch_up_page.max(1);
        let unavailable = |e: String| {
            warn!(doc = %self.doc, error = %e, "presence cannot read older versions");
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the document's history cannot be read now; send the presence again later",
            )
        };
        let mut shapes = Vec::new();
        let mut after = version;
        while after < first {
            let events = self
                .presences
                .store
                .read_events(&self.doc, after, first, page)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let Some(last) = events.last() else {
                return Err(unavailable(format!("versions after {after} are missing")));
            };
            if events.iter().enumerate().any(|(i, e)| e.version != after + 1 + i as u64) {
                return Err(unavailable(format!("the versions after {after} are not consecutive")));
            }
            after = last.version;
            shapes.extend(events.iter().map(|e| Shape::of(&e.op)));
        }
        if let Some(window) = &mut self.window {
            window.prepend(shapes);
        }
        Ok(())
    }
}
