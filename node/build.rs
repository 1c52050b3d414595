//! The node's binary finds llama.cpp's shared libraries beside itself: `.cargo/config.toml`
//! gives every binary the run path `$ORIGIN`, and here it is made an old-style `DT_RPATH`,
//! which (unlike `DT_RUNPATH`) also applies to the libraries' own dependencies
//! (`libllama.so.0` needs `libggml-base.so.0`, and says nothing of where to find it).

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--disable-new-dtags");
}
