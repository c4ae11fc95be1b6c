//! Compiles the `.proto` files under `proto/` into Rust (prost messages, tonic clients and
//! servers). `protoc` comes from the `protoc-bin-vendored` crate, so a fresh machine needs only
//! cargo.
//!
//! etcd's packages (`etcdserverpb`, `mvccpb`, `authpb`) also get serde impls from `pbjson-build`:
//! protobuf's canonical JSON mapping as etcd's grpc-gateway writes it (field names as in the
//! `.proto`, 64-bit integers as strings, bytes as base64, enums by name, zero values omitted;
//! both the proto and the camelCase names accepted on input, unknown fields ignored). The HTTP gateway uses them.

const PROTO_ROOT: &str = "proto";

const PROTOS: &[&str] = &[
    "proto/etcd/api/mvccpb/kv.proto",
    "proto/etcd/api/authpb/auth.proto",
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
    "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
    "proto/cairn/cairnpb/internal.proto",
    "proto/cairn/raftpb/raft.proto",
    "proto/cairn/logpb/log.proto",
    "proto/cairn/curppb/curp.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts run single-threaded here, so setting the variable is sound; prost-build
    // reads `PROTOC` to find the compiler.
    std::env::set_var("PROTOC", protoc);

    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .build_server(true)
        .build_client(true)
        // Raft entries travel from the proposer to the WAL and the wire without a copy.
        .bytes(".raftpb.Entry")
        .bytes(".raftpb.ForwardRequest")
        .compile_protos(PROTOS, &[PROTO_ROOT])?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        // grpc-gateway v1 (etcd 3.5) decodes with unknown fields allowed and dropped.
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb"])?;
    Ok(())
}
