//! abnix-install: provision a disk or a disk-image file with the A/B layout.

fn main() {
    eprintln!("abnix-install: not built yet");
    std::process::exit(1);
}
