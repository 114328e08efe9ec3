//! The client and server messages: parsing, errors, and the frames' shapes.

use super::*;

fn err(frame: &str) -> String {
    let e = ClientMessage::parse(frame).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    e.message
}

/// The general path alone: what `parse` did before its `op` shortcut.
fn parse_general(frame: &str) -> Result<ClientMessage, ProtocolError> {
    let value: Value = serde_json::from_str(frame).unwrap();
    let Value::Object(mut fields) = value else { unreachable!() };
    assert_eq!(fields.remove("type"), Some(Value::String("op".into())));
    op_message_from(Value::Object(fields))
}

fn op_message_from(value: Value) -> Result<ClientMessage, ProtocolError> {
    let m: raw::Op = field_errors(value)?;
    op_message(&m.doc, m.seq, m.base, &m.op)
}

#[test]
fn the_op_shortcut_parses_every_op_frame_as_the_general_path_does() {
    let frames = [
        r#"{"type":"op","doc":"d","seq":1,"base":0,"op":["hi"]}"#,
        r#"{"op":[2,"x",-1],"base":7,"seq":3,"doc":"team/d","type":"op","extra":{"a":[1]}}"#,
        r#"{"type":"op","doc":"d/e","seq":1,"base":0,"op":["é"]}"#,
        r#"{"type":"op","doc":"d","seq":1,"base":0,"op":["a"],"doc":"e"}"#,
        r#"{"type":"op","doc":"d","seq":1.0,"base":0,"op":["a"]}"#,
        r#"{"type":"op","doc":"d","seq":9007199254740992,"base":0,"op":["a"]}"#,
        r#"{"type":"op","doc":"","seq":1,"base":0,"op":["a"]}"#,
        r#"{"type":"op","doc":"d","seq":1,"base":0,"op":[0]}"#,
        r#"{"type":"op","doc":"d","seq":1,"base":0}"#,
    ];
    for frame in frames {
        let (fast, general) = (ClientMessage::parse(frame), parse_general(frame));
        match (&fast, &general) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{frame}"),
            (Err(a), Err(b)) => assert_eq!((&a.code, &a.message), (&b.code, &b.message), "{frame}"),
            _ => panic!("{frame}: {fast:?} against {general:?}"),
        }
    }
}

#[test]
fn the_server_frame_shortcut_parses_as_the_tagged_enum_does() {
    let frames = [
        r#"{"type":"ack","doc":"d","seq":2,"version":5}"#,
        r#"{"version":5,"seq":2,"doc":"d","type":"ack","extra":[1]}"#,
        r#"{"type":"op","doc":"d","version":3,"client":"u:c","op":[1,"x"]}"#,
        r#"{"type":"op","doc":"d","version":3,"client":"u:c","op":[1,"x"],"seq":4}"#,
        r#"{"type":"ack","doc":"d","version":5}"#,
        r#"{"type":"op","doc":"d","version":3,"op":[1,"x"]}"#,
        r#"{"type":"op","doc":"d","version":3,"client":"u:c","op":[0]}"#,
        r#"{"type":"ack","doc":"","seq":2,"version":5}"#,
        r#"{"type":"ack","doc":"d","seq":2,"version":5,"doc":"e"}"#,
        r#"{"type":"opened","doc":"d","version":5}"#,
        r#"{"type":"pong"}"#,
    ];
    for frame in frames {
        let (fast, tagged) = (ServerMessage::parse(frame), serde_json::from_str::<ServerMessage>(frame));
        match (&fast, &tagged) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{frame}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{frame}"),
            _ => panic!("{frame}: {fast:?} against {tagged:?}"),
        }
    }
}

#[test]
fn parses_every_client_message() {
    assert_eq!(
        ClientMessage::parse(r#"{"type":"hello","protocol":1,"client":"c1","extra":true}"#).unwrap(),
        ClientMessage::Hello { protocol: 1, client: ClientId::parse("c1").unwrap() }
    );
    assert_eq!(
        ClientMessage::parse(r#"{"type":"open","doc":"d","since":3}"#).unwrap(),
        ClientMessage::Open { doc: DocId::parse("d").unwrap(), since: Some(3), presence: false }
    );
    let op = ClientMessage::parse(r#"{"type":"op","doc":"d","seq":1,"base":0,"op":["hi"]}"#).unwrap();
    let ClientMessage::Op { seq: 1, base: 0, op, .. } = op else { panic!("{op:?}") };
    assert_eq!(op.to_json(), serde_json::json!(["hi"]));
    assert_eq!(ClientMessage::parse(r#"{"type":"ping"}"#).unwrap(), ClientMessage::Ping);
    let auth = ClientMessage::parse(r#"{"type":"auth","token":"secret-token"}"#).unwrap();
    assert_eq!(auth, ClientMessage::Auth { token: BearerToken::new("secret-token") });
    assert!(!format!("{auth:?}").contains("secret-token"), "the token must not reach a log");
    assert!(matches!(ClientMessage::parse(r#"{"type":"close","doc":"d"}"#), Ok(ClientMessage::Close { .. })));
}

#[test]
fn errors_name_the_problem() {
    assert!(err("not json").contains("not valid JSON"));
    assert!(err("[1]").contains("JSON object"));
    assert!(err(r#"{"doc":"d"}"#).contains("no `type`"));
    assert!(err(r#"{"type":"dance"}"#).contains("unknown message type \"dance\""));
    assert!(err(r#"{"type":"open"}"#).contains("missing field `doc`"));
    assert!(err(r#"{"type":"auth"}"#).contains("missing field `token`"));
    assert!(err(r#"{"type":"auth","token":""}"#).contains("`token` is empty"));
    assert!(err(r#"{"type":"open","doc":"a b"}"#).contains("field `doc`"));
    assert!(err(r#"{"type":"op","doc":"d","seq":"1","base":0,"op":[]}"#).contains("invalid type"));
    let e = ClientMessage::parse(r#"{"type":"op","doc":"d","seq":4,"base":0,"op":[1.5]}"#).unwrap_err();
    assert!(e.message.contains("field `op`"), "{}", e.message);
    assert_eq!(e.seq, Some(4));
    assert!(err(r#"{"type":"op","doc":"d","seq":9007199254740992,"base":0,"op":[]}"#)
        .contains("the limit is 9007199254740991"));
    assert!(err(r#"{"type":"open","doc":"d","since":18446744073709551615}"#).contains("field `since`"));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(err(&deep).contains("recursion limit"));
}

#[test]
fn server_messages_match_the_protocol() {
    let doc = DocId::parse("d").unwrap();
    let m = ServerMessage::Ack { doc: doc.clone(), seq: 2, version: 7 };
    assert_eq!(m.to_json(), r#"{"type":"ack","doc":"d","seq":2,"version":7}"#);
    let e: ServerMessage = ProtocolError::bad_request("x").into();
    assert_eq!(e.to_json(), r#"{"type":"error","code":"bad_request","message":"x"}"#);
    assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
    let authed = ServerMessage::Authed { user: "alice".to_owned(), expires: 1_767_225_600 };
    assert_eq!(authed.to_json(), r#"{"type":"authed","user":"alice","expires":1767225600}"#);
}
