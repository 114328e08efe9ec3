//! The connection to the gateway: its address, the bearer token on every call, and a time limit on
//! each answer.

use std::future::Future;
use std::time::Duration;

use tandem_proto::proto::documents_client::DocumentsClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::args::ConnectionArgs;
use crate::error::{CliError, Exit};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer accepted: a GetDocument of a document at the server's default limit of
/// 10,000,000 characters, each up to 4 bytes of UTF-8, with room.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The Documents client, with the token on every request.
pub type Api = DocumentsClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to each request (nothing without a token).
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The endpoint URI of `--address`: `HOST:PORT` gets `http://`; only plain HTTP/2 is spoken.
pub fn endpoint_uri(address: &str) -> Result<String, CliError> {
    let address = address.trim();
    let uri = if address.contains("://") { address.to_owned() } else { format!("http://{address}") };
    let uri = match uri.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.trim_end_matches('/')),
        None => uri,
    };
    if uri.starts_with("https://") {
        return Err(CliError::usage(
            format!("--address {address}"),
            "https is not supported by this client: reach the gateway over http:// (inside the cluster \
             network, or through a port-forward)",
        ));
    }
    if !uri.starts_with("http://") || uri.len() == "http://".len() {
        return Err(CliError::usage(
            format!("--address {address}"),
            "expected http://HOST:PORT or HOST:PORT",
        ));
    }
    Ok(uri)
}

/// The token: `--token`/`TANDEM_TOKEN`, or the contents of `--token-file`/`TANDEM_TOKEN_FILE`.
pub fn resolve_token(args: &ConnectionArgs) -> Result<Option<String>, CliError> {
    let token = match (&args.token, &args.token_file) {
        (Some(_), Some(_)) => {
            return Err(CliError::usage(
                "the token",
                "give a token or a token file, not both (TANDEM_TOKEN and TANDEM_TOKEN_FILE count too)",
            ))
        }
        (Some(token), None) => token.trim().to_owned(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| CliError::usage(format!("--token-file {}", file.display()), e.to_string()))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        return Err(CliError::usage("the token", "it is empty"));
    }
    Ok(Some(token))
}

/// The `authorization` value of a token.
fn bearer(token: Option<String>) -> Result<Bearer, CliError> {
    let Some(token) = token else { return Ok(Bearer(None)) };
    let value = format!("Bearer {token}").parse::<MetadataValue<Ascii>>().map_err(|_| {
        CliError::usage("the token", "it holds characters a request header cannot carry (not visible ASCII)")
    })?;
    Ok(Bearer(Some(value)))
}

/// Connects to the gateway (failing with [`Exit::Unavailable`] when it does not answer).
pub async fn connect(args: &ConnectionArgs) -> Result<Api, CliError> {
    let uri = endpoint_uri(&args.address)?;
    let auth = bearer(resolve_token(args)?)?;
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| CliError::usage(format!("--address {}", args.address), e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| {
        CliError::local(Exit::Unavailable, format!("connect to {uri}"), chain(&e))
            .with_hint("is the gateway running there? set --address or TANDEM_ADDRESS")
    })?;
    Ok(DocumentsClient::with_interceptor(channel, auth)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// One request's answer within `timeout`; a status becomes a [`CliError`] in `context`.
pub async fn answer<T>(
    context: &str,
    timeout: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(CliError::from_status(context, &status)),
        Err(_) => Err(CliError::local(
            Exit::Unavailable,
            context,
            format!("no answer within {:.1} s", timeout.as_secs_f64()),
        )
        .with_hint("retry later, or allow longer with --timeout")),
    }
}

/// An error and its causes, `a: b: c` (a transport error's own text says little).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: Option<&str>, token_file: Option<&std::path::Path>) -> ConnectionArgs {
        ConnectionArgs {
            address: crate::args::DEFAULT_ADDRESS.to_owned(),
            token: token.map(str::to_owned),
            token_file: token_file.map(|p| p.to_owned()),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn addresses_default_to_http_and_https_is_refused_by_name() {
        assert_eq!(endpoint_uri("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(endpoint_uri("http://gw:80/").unwrap(), "http://gw:80");
        let e = endpoint_uri("https://gw:443").unwrap_err();
        assert_eq!(e.exit, Exit::Usage);
        assert!(e.message.contains("https is not supported"), "{e}");
        assert!(endpoint_uri("ftp://x").is_err() && endpoint_uri("http://").is_err());
    }

    #[test]
    fn the_token_comes_from_the_flag_or_a_file_never_both() {
        assert_eq!(resolve_token(&args(None, None)).unwrap(), None);
        assert_eq!(resolve_token(&args(Some(" abc \n"), None)).unwrap().as_deref(), Some("abc"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(resolve_token(&args(None, Some(&file))).unwrap().as_deref(), Some("from-file"));
        let both = resolve_token(&args(Some("a"), Some(&file))).unwrap_err();
        assert!(both.message.contains("not both"), "{both}");
        let missing = resolve_token(&args(None, Some(&dir.path().join("nope")))).unwrap_err();
        assert_eq!(missing.exit, Exit::Usage);
        assert!(missing.context.contains("nope"), "{missing}");
        std::fs::write(&file, "  \n").unwrap();
        assert!(resolve_token(&args(None, Some(&file))).unwrap_err().message.contains("empty"));
    }

    #[test]
    fn the_bearer_header_is_added_to_every_request() {
        let mut auth = bearer(Some("t0k".into())).unwrap();
        let request = auth.call(Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer t0k");
        let mut none = bearer(None).unwrap();
        assert!(none.call(Request::new(())).unwrap().metadata().get("authorization").is_none());
        assert!(bearer(Some("bad\u{7}token".into())).is_err());
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_in_time_is_named() {
        let never = std::future::pending::<Result<Response<()>, Status>>();
        let e = answer("get d", Duration::from_millis(10), never).await.unwrap_err();
        assert_eq!(e.exit, Exit::Unavailable);
        assert!(e.message.contains("no answer within 0.0 s") && e.hint.unwrap().contains("--timeout"));
    }

    #[tokio::test]
    async fn an_address_nobody_listens_on_fails_to_connect_with_exit_3() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut a = args(None, None);
        a.address = format!("127.0.0.1:{port}");
        let e = connect(&a).await.unwrap_err();
        assert_eq!(e.exit, Exit::Unavailable);
        assert!(e.context.contains(&port.to_string()), "{e}");
    }
}
