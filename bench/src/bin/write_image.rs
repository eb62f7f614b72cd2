//! Drives the image pipeline for `bench/pipeline.sh`.
//!
//! ```text
//! write_image pack RAW DIR            RAW -> DIR/image.zst + DIR/image.chunks
//! write_image write DIR TARGET [--verify]
//! ```
//!
//! `pack` is a stand-in for the real `abnix-update pack`: content-defined
//! chunks (fastcdc 2020, 64 KiB / 256 KiB / 1 MiB), each compressed as an
//! independent zstd frame at level 3. `image.chunks` is a text index: a first
//! line "SIZE SHA256", then "LEN COMPRESSED_LEN SHA256" per chunk.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use abnix_core::pipeline::{write_image, ImageSpec, WriteOptions};
use abnix_core::progress;
use abnix_formats::digest::Digest;
use abnix_formats::index::{Chunk, Index};
use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["pack", raw, dir] => pack(Path::new(raw), Path::new(dir)),
        ["write", dir, target] => write(Path::new(dir), Path::new(target), false),
        ["write", dir, target, "--verify"] => write(Path::new(dir), Path::new(target), true),
        _ => bail!("usage: write_image pack RAW DIR | write_image write DIR TARGET [--verify]"),
    }
}

fn pack(raw: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let input = File::open(raw).with_context(|| format!("opening {}", raw.display()))?;
    let mut object = BufWriter::new(File::create(dir.join("image.zst"))?);
    let mut lines = Vec::new();
    let mut whole = Sha256::new();
    let mut size = 0u64;
    for chunk in fastcdc::v2020::StreamCDC::new(input, 64 << 10, 256 << 10, 1 << 20) {
        let chunk = chunk.context("chunking the image")?;
        let frame = zstd::bulk::compress(&chunk.data, 3)?;
        object.write_all(&frame)?;
        whole.update(&chunk.data);
        size += chunk.length as u64;
        lines.push(format!(
            "{} {} {}",
            chunk.length,
            frame.len(),
            Digest::of(&chunk.data)
        ));
    }
    object.flush()?;
    let header = format!("{size} {}", Digest(whole.finalize().into()));
    fs::write(
        dir.join("image.chunks"),
        [header]
            .into_iter()
            .chain(lines)
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )?;
    Ok(())
}

fn load_index(dir: &Path) -> Result<(Index, u64, Digest)> {
    let text = fs::read_to_string(dir.join("image.chunks")).context("reading image.chunks")?;
    let mut lines = text.lines();
    let header = lines.next().context("empty image.chunks")?;
    let (size, sha256) = header.split_once(' ').context("bad header line")?;
    let mut index = Index::default();
    let (mut offset, mut compressed_offset) = (0u64, 0u64);
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        let [len, compressed_len, sha256] = fields[..] else {
            bail!("bad chunk line {line:?}");
        };
        let chunk = Chunk {
            offset,
            len: len.parse()?,
            compressed_offset,
            compressed_len: compressed_len.parse()?,
            sha256: sha256.parse()?,
        };
        offset += u64::from(chunk.len);
        compressed_offset += u64::from(chunk.compressed_len);
        index.chunks.push(chunk);
    }
    Ok((index, size.parse()?, sha256.parse()?))
}

fn write(dir: &Path, target: &Path, verify_readback: bool) -> Result<()> {
    let (index, size, sha256) = load_index(dir)?;
    let source = File::open(dir.join("image.zst")).context("opening image.zst")?;
    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .with_context(|| format!("opening {}", target.display()))?;
    if disk.metadata()?.len() < size {
        disk.set_len(size)?;
    }
    let opts = WriteOptions {
        verify_readback,
        target_name: target.display().to_string(),
        ..WriteOptions::default()
    };
    let spec = ImageSpec {
        index: &index,
        size,
        sha256,
    };
    let report = write_image(source, &spec, &mut disk, &opts, &*progress::for_stderr())?;
    println!(
        "wrote {} bytes ({} chunks) in {:.3} s, {:.0} MB/s",
        report.bytes,
        report.chunks,
        report.elapsed.as_secs_f64(),
        report.bytes as f64 / report.elapsed.as_secs_f64() / 1e6
    );
    Ok(())
}
