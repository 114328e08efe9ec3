//! `watch`: the events after `--from`, the end of the catch-up, then live events, until Ctrl-C or
//! the document's deletion. A stream the server ends otherwise (a reader too slow, a gateway
//! shutting down) is an error that says which version to watch again from.

use std::time::Duration;

use tandem_proto::proto::watch_document_response::Event;
use tandem_proto::proto::WatchDocumentRequest;

use super::Out;
use crate::connect::{answer, Api};
use crate::error::{CliError, Exit};
use crate::output::{EventLine, WatchLine};

pub async fn watch(
    api: &mut Api,
    timeout: Duration,
    out: Out,
    doc: String,
    from: u64,
) -> Result<(), CliError> {
    let context = format!("watch {doc}");
    let print = |line: &WatchLine| out.line(&if out.json { line.json() } else { line.text() });
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let request = WatchDocumentRequest { doc: doc.clone(), from_version: from };
    let mut stream = tokio::select! {
        _ = &mut ctrl_c => return Ok(()),
        stream = answer(&context, timeout, api.watch_document(request)) => stream?,
    };
    let mut last = from;
    let again = |last: u64| format!("watch again with --from {last}");
    loop {
        let message = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            message = stream.message() => message,
        };
        let event = match message {
            Ok(Some(response)) => response.event,
            Ok(None) => {
                return Err(CliError::local(
                    Exit::Unavailable,
                    context,
                    format!("the server ended the watch after version {last}"),
                )
                .with_hint(again(last)))
            }
            Err(status) => return Err(CliError::from_status(context, &status).with_hint(again(last))),
        };
        match event {
            Some(Event::Committed(event)) => {
                let event = EventLine::from_proto(&context, event)?;
                last = event.version;
                print(&WatchLine::Committed(event))?;
            }
            Some(Event::CaughtUp(caught_up)) => print(&WatchLine::CaughtUp { version: caught_up.version })?,
            Some(Event::Deleted(deleted)) => {
                let line = WatchLine::Deleted {
                    doc: deleted.doc,
                    last_version: deleted.last_version,
                    author: deleted.author,
                };
                return print(&line);
            }
            // A kind of event newer than this client: nothing it can show.
            None => {}
        }
    }
}
