//! Generates the protobuf code of `proto/tandem/v1/*.proto` at the workspace root, once, for every
//! crate that speaks it.
//!
//! Both files share package `tandem.v1`, so they compile together into one module: the record
//! messages (`records.proto`) and the gRPC request and response messages (`sequencer.proto`)
//! always, the tonic client and server of service `Sequencer` only with feature `grpc`. Gating the
//! service here rather than generating it in tandem-rpc keeps a single copy of every message type.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so building needs no system package.
//!
//! It also writes the encoded `FileDescriptorSet` of these files, which the gateway's gRPC server
//! reflection serves (`tandem_proto::FILE_DESCRIPTOR_SET`), so tools such as grpcurl can call the
//! Documents API without a copy of the .proto files.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let files = [
        proto_root.join("tandem/v1/records.proto"),
        proto_root.join("tandem/v1/sequencer.proto"),
        proto_root.join("tandem/v1/documents.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    // Cargo tells a build script its package's enabled features through the environment.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();

    // An explicitly set PROTOC wins, so a developer can try another protoc version.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let descriptor_set = PathBuf::from(std::env::var("OUT_DIR")?).join("tandem_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptor_set)
        .build_client(grpc)
        .build_server(grpc)
        .emit_rerun_if_changed(false)
        .compile_protos(&files, &[proto_root])?;
    Ok(())
}
