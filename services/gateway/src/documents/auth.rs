//! Who calls the Documents API, decided as for a WebSocket upgrade: the metadata
//! `authorization: Bearer <token>` carries a user JWT (its `docs` claim says which documents the
//! user may read and write) or, where the gateway has one, the service token (every document).
//! Without authentication (`--insecure-no-auth`) every caller is `anonymous` and may do everything.
//!
//! Tokens are checked by the sequencer ingress's [`CallerCheck`], so both gRPC edges accept the
//! same credentials the same way; its refusals are re-issued with an `ApiError` (`unauthorized`).
//!
//! The author recorded for a call's edits, deletions and checkpoints is the token's user. A service
//! acts for someone else: it names them in the metadata `tandem-author` (the author is `service`
//! without it); users cannot, their own id is always the author.

use std::sync::Arc;

use tandem_auth::{Access, Principal, Verifier};
use tandem_protocol::{DocId, ErrorCode};
use tandem_rpc::{Caller, CallerAuth, CallerCheck};
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::errors::{bad_request, status};
use crate::admission::Authentication;
use crate::config::ServiceToken;

/// The metadata key in which a service-token caller names the user it acts for.
pub const AUTHOR_METADATA: &str = "tandem-author";
/// The author of a service-token call that names none.
pub const SERVICE_AUTHOR: &str = "service";

/// The authenticated caller of one call, put into the request's extensions by [`ApiAuth`].
#[derive(Debug, Clone)]
pub(crate) struct ApiCaller {
    pub principal: Principal,
    /// Recorded as the author of what the call changes.
    pub author: String,
    /// When the caller's token stops being valid (Unix seconds, leeway included); a watch ends then.
    pub valid_until: Option<u64>,
}

impl ApiCaller {
    /// Fails with `forbidden` unless the caller may do `access` on `doc`.
    pub fn authorize(&self, access: Access, doc: &DocId) -> Result<(), Status> {
        if self.principal.allows(access, doc) {
            return Ok(());
        }
        metrics::counter!("tandem_gateway_forbidden_total").increment(1);
        let verb = match access {
            Access::Read => "read",
            Access::Write => "write",
        };
        Err(status(
            ErrorCode::Forbidden,
            format!("user {:?} may not {verb} document {doc}", self.principal.user),
        ))
    }
}

/// The caller of `request`, as [`ApiAuth`] decided.
pub(crate) fn caller<T>(request: &Request<T>) -> Result<ApiCaller, Status> {
    request
        .extensions()
        .get::<ApiCaller>()
        .cloned()
        .ok_or_else(|| status(ErrorCode::Internal, "the call was not authenticated (a server bug)"))
}

/// The interceptor in front of the Documents service.
#[derive(Clone)]
pub(crate) struct ApiAuth {
    /// `None`: authentication is off.
    check: Option<CallerCheck>,
}

impl ApiAuth {
    pub fn new(auth: &Authentication, service_token: Option<&ServiceToken>) -> Self {
        let verifier: Option<Arc<Verifier>> = match auth {
            Authentication::Disabled => return Self { check: None },
            Authentication::Jwt(verifier) => Some(verifier.clone()),
        };
        let service_token = service_token.map(|t| t.expose().to_owned());
        Self { check: Some(CallerCheck::new(CallerAuth { service_token, verifier })) }
    }

    fn caller(&mut self, request: &mut Request<()>) -> Result<ApiCaller, Status> {
        let Some(check) = &mut self.check else {
            return Ok(ApiCaller {
                principal: Principal::anonymous(),
                author: "anonymous".to_owned(),
                valid_until: None,
            });
        };
        let checked = check.call(std::mem::replace(request, Request::new(()))).map_err(|refused| {
            metrics::counter!("tandem_gateway_auth_failures_total").increment(1);
            status(ErrorCode::Unauthorized, refused.message())
        })?;
        *request = checked;
        let Caller { principal, valid_until, user_token } = request
            .extensions_mut()
            .remove::<Caller>()
            .ok_or_else(|| status(ErrorCode::Internal, "the caller check named no caller (a server bug)"))?;
        let author = if user_token { principal.user.clone() } else { named_author(request.metadata())? };
        Ok(ApiCaller { principal, author, valid_until })
    }
}

impl Interceptor for ApiAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.caller(&mut request)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The author a service-token caller names in `tandem-author`, else [`SERVICE_AUTHOR`]: 1 to 256
/// visible ASCII characters (the most an author may have on the wire).
fn named_author(metadata: &MetadataMap) -> Result<String, Status> {
    let Some(value) = metadata.get(AUTHOR_METADATA) else { return Ok(SERVICE_AUTHOR.to_owned()) };
    let max = tandem_proto::convert::MAX_AUTHOR_BYTES;
    // `to_str` takes visible ASCII only: no control characters.
    let author = value.to_str().ok().filter(|a| !a.is_empty() && a.len() <= max).ok_or_else(|| {
        bad_request(format!(
            "metadata `{AUTHOR_METADATA}` must be 1 to {max} visible ASCII characters (a user id)"
        ))
    })?;
    Ok(author.to_owned())
}

#[cfg(test)]
mod tests {
    use tandem_auth::{mint, KeyAlgorithm, MintKey, MintRequest, VerifierConfig};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth() -> ApiAuth {
        let verifier = Verifier::new(VerifierConfig::new(KeyAlgorithm::Hs256, vec![SECRET.to_vec()]))
            .expect("a verifier");
        let token: ServiceToken = "s3cret-service-token".parse().expect("a token");
        ApiAuth::new(&Authentication::Jwt(Arc::new(verifier)), Some(&token))
    }

    fn request(pairs: &[(&'static str, &str)]) -> Request<()> {
        let mut request = Request::new(());
        for (key, value) in pairs {
            request.metadata_mut().insert(*key, value.parse().expect("ascii"));
        }
        request
    }

    fn called(auth: &mut ApiAuth, pairs: &[(&'static str, &str)]) -> Result<ApiCaller, Status> {
        let request = auth.call(request(pairs))?;
        Ok(request.extensions().get::<ApiCaller>().expect("a caller").clone())
    }

    #[test]
    fn users_are_the_authors_of_their_calls_and_keep_their_permissions() {
        let token =
            mint(&MintKey::Hs256(SECRET.to_vec()), &MintRequest::new("ada", &["handbook"], &["team/*"]))
                .expect("a token");
        let bearer = format!("Bearer {token}");
        // A user cannot pass for someone else: `tandem-author` is ignored.
        let caller =
            called(&mut auth(), &[("authorization", &bearer), (AUTHOR_METADATA, "bob")]).expect("valid");
        assert_eq!(caller.author, "ada");
        assert!(caller.valid_until.is_some());
        let doc = |id| DocId::parse(id).expect("id");
        assert!(caller.authorize(Access::Read, &doc("handbook")).is_ok());
        let refused = caller.authorize(Access::Write, &doc("handbook")).expect_err("read only");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("ada") && refused.message().contains("handbook"), "{refused:?}");
        assert!(caller.authorize(Access::Write, &doc("team/x")).is_ok());
    }

    #[test]
    fn the_service_token_may_do_everything_and_names_its_author() {
        let mut auth = auth();
        let caller = called(&mut auth, &[("authorization", "Bearer s3cret-service-token")]).expect("valid");
        assert_eq!(caller.author, SERVICE_AUTHOR);
        assert!(caller.authorize(Access::Write, &DocId::parse("any").expect("id")).is_ok());
        let caller =
            called(&mut auth, &[("authorization", "Bearer s3cret-service-token"), (AUTHOR_METADATA, "ada")])
                .expect("valid");
        assert_eq!(caller.author, "ada");
        let bad =
            called(&mut auth, &[("authorization", "Bearer s3cret-service-token"), (AUTHOR_METADATA, "")])
                .expect_err("an empty author");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn missing_or_wrong_tokens_are_unauthorized_with_an_api_error() {
        use prost::Message;
        for pairs in [&[][..], &[("authorization", "Bearer nope")][..], &[("authorization", "Basic x")][..]] {
            let refused = called(&mut auth(), pairs).expect_err("refused");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            let details = tandem_proto::proto::ApiError::decode(refused.details()).expect("details");
            assert_eq!(details.code, "unauthorized");
        }
    }

    #[test]
    fn without_authentication_everyone_is_anonymous() {
        let mut open = ApiAuth::new(&Authentication::Disabled, None);
        let caller = called(&mut open, &[]).expect("no token needed");
        assert_eq!(caller.author, "anonymous");
        assert!(caller.authorize(Access::Write, &DocId::parse("x").expect("id")).is_ok());
    }
}
