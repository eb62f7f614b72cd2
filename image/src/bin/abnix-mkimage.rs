//! abnix-mkimage: writes a root image of a directory tree (to be written).
fn main() {}
