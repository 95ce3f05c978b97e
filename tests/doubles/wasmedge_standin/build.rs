// The shim stands for runwasi's, which links WasmEdge in: it provides libwasmedge.so.0 to the plugin it
// loads. A DT_NEEDED entry is satisfied by an object already loaded under that SONAME, the executable
// included, so the shim binary carries that SONAME.
fn main() {
    println!("cargo:rustc-link-arg-bin=containerd-shim-wasmedge-v1=-Wl,-soname,libwasmedge.so.0");
}
