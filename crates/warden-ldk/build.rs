//! Compiles the node-to-signer link (proto/hsmd.proto), server side only: the LDK process serves
//! it and wardend dials in. Needs `protoc` (scripts/setup.sh installs protobuf-compiler).
fn main() {
    println!("cargo:rerun-if-changed=proto/hsmd.proto");
    tonic_build::configure()
        .build_server(true)
        .build_client(false)
        .compile_protos(&["proto/hsmd.proto"], &["proto"])
        .expect("compiling proto/hsmd.proto (is protoc installed? run scripts/setup.sh)");
}
