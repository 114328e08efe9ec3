//! Errors of setting up the gRPC client and server. Errors of individual submissions are
//! [`tandem_bus::BusError`] (client side) or answers on the stream (server side).

/// Why a [`crate::GrpcSubmitter`] could not be built or [`crate::serve`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// A configuration value that cannot work: no endpoint, an endpoint that is not a URI, a token
    /// that cannot be sent as a header value.
    #[error("invalid rpc configuration: {0}")]
    Config(String),
    /// The gRPC server failed while serving.
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}
