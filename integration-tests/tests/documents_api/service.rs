//! What the gRPC port serves besides the Documents service: health and reflection, next to the
//! gateway's HTTP routes on the same port.

use std::time::Duration;

use futures::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha;

use super::harness::Server;

/// grpc.health.v1 answers SERVING for the server and the Documents service (no token needed), and
/// reflection (v1 and v1alpha) lists the services and describes tandem.v1.Documents; the WebSocket
/// port's HTTP routes still answer beside them.
pub async fn health_and_reflection_answer_on_the_http_port(server: &Server) {
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "tandem.v1.Documents"] {
        // The answer follows the gateway's readiness, checked every second: a probe polls.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = health
                .check(HealthCheckRequest { service: service.into() })
                .await
                .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"))
                .into_inner()
                .status;
            if status == ServingStatus::Serving as i32 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{service:?} is still {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let unknown = health.check(HealthCheckRequest { service: "tandem.v1.Nothing".into() }).await;
    assert_eq!(unknown.expect_err("an unknown service").code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let ask = |message| ServerReflectionRequest { host: String::new(), message_request: Some(message) };
    let requests = futures::stream::iter([
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("tandem.v1.Documents".into())),
    ]);
    let mut answers = reflection.server_reflection_info(requests).await.expect("reflection").into_inner();
    let listed = match answers.next().await.expect("a first answer").expect("listed").message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("expected the list of services, got {other:?}"),
    };
    for name in ["tandem.v1.Documents", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(listed.iter().any(|s| s == name), "{name} in {listed:?}");
    }
    assert!(!listed.iter().any(|s| s == "tandem.v1.Sequencer"), "not served here: {listed:?}");
    match answers.next().await.expect("a second answer").expect("described").message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            let described = files.file_descriptor_proto.iter().any(|f| {
                let text = String::from_utf8_lossy(f);
                text.contains("tandem/v1/documents.proto") && text.contains("ApplyEdit")
            });
            assert!(described, "documents.proto describes the service");
        }
        other => panic!("expected file descriptors, got {other:?}"),
    }

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers =
        alpha.server_reflection_info(futures::stream::iter([request])).await.expect("v1alpha").into_inner();
    let answer = answers.next().await.expect("an answer").expect("listed");
    assert!(format!("{answer:?}").contains("tandem.v1.Documents"), "{answer:?}");

    let address = server.endpoint().trim_start_matches("http://").to_owned();
    let healthz = tandem_integration_tests::http_get(&address, "/healthz");
    assert_eq!(healthz.map(|(status, _)| status), Some(200), "HTTP/1.1 on the same port");
}
