//! Compiles the admin API (proto/warden.proto) with tonic-build; needs `protoc`
//! (scripts/setup.sh installs protobuf-compiler).
fn main() {
    println!("cargo:rerun-if-changed=proto/warden.proto");
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/warden.proto"], &["proto"])
        .expect("compiling proto/warden.proto (is protoc installed? run scripts/setup.sh)");
}
