//! Compiles `proto/envelope.proto` with protox (pure Rust, no `protoc` needed)
//! and generates the prost types.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["envelope.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .btree_map(["."])
        .compile_fds(fds)?;
    Ok(())
}
