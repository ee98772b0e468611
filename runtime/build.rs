//! Device builds (`--cfg nanostar_device`, set in `.cargo/config.toml`) link with
//! `device.ld`, which drops the unwind tables a binary without an unwinder never reads.

fn main() {
    println!("cargo:rerun-if-changed=device.ld");
    println!("cargo:rustc-check-cfg=cfg(nanostar_device)");
    if std::env::var_os("CARGO_CFG_NANOSTAR_DEVICE").is_some() {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/device.ld");
    }
}
