//! A WebSocket text frame parsed by `ClientMessage::parse`: never a panic, always a `bad_request`
//! when refused (which must serialise to a valid server frame), and every accepted message written
//! back as JSON parses to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tandem_fuzz::{assert_json_round_trip, assert_normal, assert_within_wire_limits};
use tandem_protocol::ws::{ClientMessage, ServerMessage, MAX_SAFE_INTEGER};
use tandem_protocol::{ClientId, ErrorCode};

/// The wire form of a client message, as PROTOCOL.md describes it (the crate only parses these).
fn to_json(m: &ClientMessage) -> Value {
    match m {
        ClientMessage::Hello { protocol, client } => {
            json!({"type": "hello", "protocol": protocol, "client": client.as_str()})
        }
        ClientMessage::Open { doc, since, presence } => {
            let mut open = json!({"type": "open", "doc": doc.as_str()});
            if let Some(since) = since {
                open["since"] = json!(since);
            }
            if *presence {
                open["presence"] = json!(true);
            }
            open
        }
        ClientMessage::Op { doc, seq, base, op } => {
            json!({"type": "op", "doc": doc.as_str(), "seq": seq, "base": base, "op": op.to_json()})
        }
        ClientMessage::Close { doc } => json!({"type": "close", "doc": doc.as_str()}),
        ClientMessage::Ping => json!({"type": "ping"}),
        ClientMessage::Auth { token } => json!({"type": "auth", "token": token.expose()}),
        ClientMessage::Presence(update) => serde_json::from_str(&update.to_json()).expect("JSON"),
    }
}

fn round_trip_server(m: &ServerMessage) {
    let frame = m.to_json();
    let back: ServerMessage = serde_json::from_str(&frame).expect("a server frame parses back");
    assert_eq!(&back, m, "server frame {frame}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    match ClientMessage::parse(frame) {
        Ok(message) => {
            let written = serde_json::to_string(&to_json(&message)).expect("serialisable");
            let again = ClientMessage::parse(&written).expect("a written message parses again");
            assert_eq!(again, message, "round trip through {written}");
            match &message {
                ClientMessage::Op { doc, seq, base, op } => {
                    assert!(*seq <= MAX_SAFE_INTEGER && *base <= MAX_SAFE_INTEGER);
                    assert_normal(op);
                    assert_within_wire_limits(op);
                    assert_json_round_trip(op);
                    // What the server sends back about it.
                    let client = ClientId::parse("fuzz").expect("valid id");
                    let (doc, version) = (doc.clone(), *base);
                    round_trip_server(&ServerMessage::Op {
                        doc: doc.clone(),
                        version,
                        client,
                        op: op.clone(),
                    });
                    round_trip_server(&ServerMessage::Ack { doc, seq: *seq, version });
                }
                ClientMessage::Open { since: Some(since), .. } => assert!(*since <= MAX_SAFE_INTEGER),
                ClientMessage::Auth { token } => {
                    assert!(!token.expose().is_empty());
                    let shown = format!("{message:?}");
                    assert_eq!(
                        shown, "Auth { token: BearerToken(<redacted>) }",
                        "a token reached Debug output"
                    );
                }
                _ => {}
            }
        }
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
            assert!(!e.message.is_empty());
            round_trip_server(&ServerMessage::from(e));
        }
    }
});
