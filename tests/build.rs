//! The fake redis-server exports `freeClient`/`freeClientAsync` in its dynamic symbol
//! table, as Redis's own builds do: that is what makes redis-trace probe it.
fn main() {
    println!("cargo:rustc-link-arg-bin=fake-redis-server=-rdynamic");
}
