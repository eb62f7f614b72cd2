#!/usr/bin/env python3
"""Where the bytes of a delta update go (issue 27, docs/delta.md).

    delta-bytes.py OLD.img OLD.index NEW.img NEW.index [--gap BYTES] [--json]

Reads two raw root images (erofs or ext4, as nix/builders/root-image.sh or a
prototype makes them) and their chunk indexes (`abnix_formats::index`, from the
bundles `pack` wrote), plans the delta the way `abnix_updater::delta::Plan` does (a
chunk of NEW is fetched unless OLD's index has a chunk with the same SHA-256;
runs of fetched frames coalesced with gaps of up to --gap compressed bytes,
default 32 KiB, read through; requests of at most 16 MiB), and maps every
byte of NEW to what the filesystem keeps there:

  new data      content of a regular file that OLD does not hold (by SHA-256
                of the whole file, wherever it sits in OLD)
  old data      content of a file OLD holds too: it only moved
  inodes, dirs  inode records (erofs: with their xattrs and chunk indexes;
                ext4: the inode table's slots in use) and directory blocks
  fs metadata   superblocks, group descriptors, bitmaps, extent tree blocks,
                shared xattrs, unused inode table slots
  free          blocks no structure uses (zeros)

Each fetched chunk is then put in one class, the first that applies:
"changed content" (it holds new data), "metadata" (it holds inodes,
directories or fs metadata; split by whether any of those belong to a store
path other than the changed ones), or "moved only" (nothing but old data and
free space). The download (compressed bytes, as the planner requests them)
is split accordingly, with the read-through gaps and the index beside.

"Store path" is the first component under /nix/store; everything outside
/nix/store (the root's mount points, links) counts as "/". The reference is
the changed content compressed: the new data, concatenated in image order,
through `zstd -9` (the pack level), and the same plus the index.

Needs python3 (3.9+) and zstd on PATH; reads the images, no root needed.
"""

import argparse
import bisect
import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import threading
from collections import defaultdict

BLOCK = 4096
ROOT_OWNER = "/"

# Byte classes, in the order the report lists them.
NEW_DATA, OLD_DATA, INODES, DIRS, FSMETA, FREE = range(6)
CLASS_NAMES = ["new data", "old data", "inodes", "dirs", "fs metadata", "free"]
METADATA_CLASSES = (INODES, DIRS, FSMETA)


# ---------------------------------------------------------------- the index


def read_index(path):
    """Chunks of an abnix index: (offset, len, compressed_offset,
    compressed_len, sha256) in image order (core/src/index.rs)."""
    data = open(path, "rb").read()
    if data[:8] != b"ABNIXIDX":
        sys.exit(f"{path}: not an abnix index")
    version, count = struct.unpack_from("<II", data, 8)
    if version != 1 or len(data) != 16 + 40 * count:
        sys.exit(f"{path}: unsupported index (format {version})")
    chunks, offset, coffset = [], 0, 0
    for i in range(count):
        length, clen = struct.unpack_from("<II", data, 16 + 40 * i)
        sha = data[24 + 40 * i : 56 + 40 * i]
        chunks.append((offset, length, coffset, clen, sha))
        offset += length
        coffset += clen
    return chunks


def plan(new, old, max_gap, max_request=16 << 20):
    """Positions of NEW's fetched chunks, and the requests as lists of
    positions with the gaps read through (updater/src/delta/plan.rs)."""
    local = {c[4] for c in old}
    fetched = [i for i, c in enumerate(new) if c[4] not in local]
    ranges, start = [], 0
    for i in fetched:
        c = new[i]
        end = c[2] + c[3]
        if ranges:
            last = new[ranges[-1][-1]]
            gap = c[2] - (last[2] + last[3])
            if gap <= max_gap and end - start <= max_request:
                ranges[-1].append(i)
                continue
        start = c[2]
        ranges.append([i])
    return fetched, ranges


# ------------------------------------------------------ filesystem mapping


class Map:
    """Byte ranges of an image: (start, end, class, owner, file key).

    `files` maps a file key to (owner, [(start, end)], size) for regular
    files, whose content is hashed later."""

    def __init__(self, size):
        self.size = size
        self.ranges = []
        self.background = []
        self.files = {}

    def add(self, start, end, cls, owner, key=None):
        if end > start:
            self.ranges.append((start, end, cls, owner, key))

    def add_background(self, start, end, cls, owner):
        """A range that only claims what no other range does (e.g. an inode
        table around the inodes in use)."""
        if end > start:
            self.background.append((start, end, cls, owner, None))

    def finish(self, image):
        """Sorts the ranges and fills what none covers: with the background
        ranges, then fs metadata where the bytes are not zero, else free.
        Overlaps keep the first range."""
        self.background.sort()
        self.ranges = self._merge(self.ranges, lambda s, e, out: self._fill_background(image, s, e, out))
        self.starts = [r[0] for r in self.ranges]

    def _merge(self, ranges, fill):
        ranges.sort()
        merged, pos = [], 0
        for start, end, cls, owner, key in ranges:
            if start < pos:
                start = pos
                if end <= start:
                    continue
            if start > pos:
                fill(pos, start, merged)
            merged.append((start, end, cls, owner, key))
            pos = end
        if pos < self.size:
            fill(pos, self.size, merged)
        return merged

    def _fill_background(self, image, start, end, out):
        for b in self.background:
            if b[0] < end and b[1] > start:
                lo, hi = max(b[0], start), min(b[1], end)
                if lo > start:
                    self._fill(image, start, lo, out)
                out.append((lo, hi, b[2], b[3], None))
                start = hi
        if start < end:
            self._fill(image, start, end, out)

    @staticmethod
    def _fill(image, start, end, out):
        # Block by block: unclaimed non-zero blocks are metadata the parser
        # does not name (e.g. ext4's reserved GDT blocks), zero ones free.
        zero = bytes(BLOCK)
        run_start, run_cls = start, None
        pos = start
        while pos < end:
            n = min(BLOCK - pos % BLOCK, end - pos)
            cls = FREE if image.read_at(pos, n) == zero[:n] else FSMETA
            if cls != run_cls and run_cls is not None:
                out.append((run_start, pos, run_cls, ROOT_OWNER, None))
                run_start = pos
            run_cls = cls
            pos += n
        out.append((run_start, end, run_cls, ROOT_OWNER, None))

    def overlapping(self, start, end):
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while i < len(self.ranges) and self.ranges[i][0] < end:
            r = self.ranges[i]
            if r[1] > start:
                yield max(r[0], start), min(r[1], end), r
            i += 1


class Image:
    def __init__(self, path):
        self.file = open(path, "rb")
        self.size = os.fstat(self.file.fileno()).st_size

    def read_at(self, offset, n):
        self.file.seek(offset)
        return self.file.read(n)


def store_owner(path):
    parts = path.split("/")
    if len(parts) >= 4 and parts[1] == "nix" and parts[2] == "store":
        return parts[3]
    return ROOT_OWNER


def detect(image):
    sb = image.read_at(1024, 128)
    if struct.unpack_from("<I", sb, 0)[0] == 0xE0F5E1E2:
        return "erofs"
    if struct.unpack_from("<H", sb, 0x38)[0] == 0xEF53:
        return "ext4"
    sys.exit("neither erofs nor ext4")


# erofs (fs/erofs/erofs_fs.h) ------------------------------------------------


def map_erofs(image):
    sb = image.read_at(1024, 128)
    blkszbits = sb[12]
    blksz = 1 << blkszbits
    root_nid = struct.unpack_from("<H", sb, 14)[0]
    meta_blkaddr, xattr_blkaddr = struct.unpack_from("<II", sb, 40)
    m = Map(image.size)
    m.add(0, blksz, FSMETA, ROOT_OWNER)
    meta_base = meta_blkaddr * blksz

    def inode_at(nid):
        pos = meta_base + nid * 32
        raw = image.read_at(pos, 64)
        fmt, xcount, mode = struct.unpack_from("<HHH", raw, 0)
        extended = fmt & 1
        layout = (fmt >> 1) & 7
        if extended:
            size = struct.unpack_from("<Q", raw, 8)[0]
            iu = struct.unpack_from("<I", raw, 16)[0]
            isize = 64
        else:
            size = struct.unpack_from("<I", raw, 8)[0]
            iu = struct.unpack_from("<I", raw, 16)[0]
            isize = 32
        xsize = 0 if xcount == 0 else 12 + 4 * (xcount - 1)
        return pos, mode, size, layout, iu, isize + xsize

    def data_extents(pos, size, layout, iu, head):
        """(start, end, in_meta) of an inode's data; in_meta for inline
        tails and the chunk index array, which sit after the inode."""
        if layout == 0:  # FLAT_PLAIN
            nblocks = -(-size // blksz)
            return [(iu * blksz, iu * blksz + nblocks * blksz, False)] if nblocks else []
        if layout == 2:  # FLAT_INLINE
            full = size // blksz
            out = [(iu * blksz, iu * blksz + full * blksz, False)] if full else []
            tail = size - full * blksz
            if tail:
                out.append((pos + head, pos + head + tail, True))
            return out
        if layout == 4:  # CHUNK_BASED
            fmt = iu & 0xFFFF
            chunkbits = blkszbits + (fmt & 0x1F)
            count = -(-size // (1 << chunkbits)) if size else 0
            out = []
            if fmt & 0x20:  # 8-byte indexes, 8-aligned
                at = (pos + head + 7) & ~7
                entry = 8
            else:
                at = pos + head
                entry = 4
            out.append((at, at + count * entry, True))
            raw = image.read_at(at, count * entry)
            remaining = size
            for i in range(count):
                blk = struct.unpack_from("<I", raw, i * entry + (4 if entry == 8 else 0))[0]
                n = min(remaining, 1 << chunkbits)
                remaining -= n
                if blk != 0xFFFFFFFF:
                    nb = -(-n // blksz)
                    out.append((blk * blksz, blk * blksz + nb * blksz, False))
            return out
        raise SystemExit(f"compressed erofs inode at {pos}: not supported")

    seen = set()
    stack = [(root_nid, "")]
    while stack:
        nid, path = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        owner = store_owner(path) if path else ROOT_OWNER
        pos, mode, size, layout, iu, head = inode_at(nid)
        m.add(pos, pos + head, INODES, owner)
        extents = data_extents(pos, size, layout, iu, head)
        if stat.S_ISREG(mode):
            key = ("erofs", nid)
            spans = []
            for start, end, in_meta in extents:
                if in_meta and layout == 4:
                    m.add(start, end, INODES, owner)
                else:
                    m.add(start, end, NEW_DATA, owner, key)  # reclassified later
                    spans.append((start, end))
            m.files[key] = (owner, spans, size)
        elif stat.S_ISDIR(mode):
            for start, end, in_meta in extents:
                m.add(start, end, DIRS, owner)
            data = b"".join(image.read_at(s, e - s) for s, e, _ in extents)[:size]
            for child_nid, name in erofs_dirents(data, blksz):
                if name in (".", ".."):
                    continue
                stack.append((child_nid, f"{path}/{name}"))
        else:  # symlinks and devices: their data is metadata
            for start, end, in_meta in extents:
                m.add(start, end, INODES, owner)
    if xattr_blkaddr:
        m.add(xattr_blkaddr * blksz, meta_base if meta_blkaddr > xattr_blkaddr else xattr_blkaddr * blksz, FSMETA, ROOT_OWNER)
    return m


def erofs_dirents(data, blksz):
    for block_start in range(0, len(data), blksz):
        block = data[block_start : block_start + blksz]
        if len(block) < 12:
            break
        first_nameoff = struct.unpack_from("<H", block, 8)[0]
        count = first_nameoff // 12
        entries = [struct.unpack_from("<QHBB", block, i * 12) for i in range(count)]
        for i, (nid, nameoff, _ftype, _) in enumerate(entries):
            end = entries[i + 1][1] if i + 1 < count else len(block)
            name = block[nameoff:end].split(b"\0", 1)[0]
            yield nid, name.decode("utf-8", "surrogateescape")


# ext4 (fs/ext4/ext4.h) ------------------------------------------------------


def map_ext4(image):
    sb = image.read_at(1024, 1024)
    u32 = lambda off: struct.unpack_from("<I", sb, off)[0]
    u16 = lambda off: struct.unpack_from("<H", sb, off)[0]
    bs = 1024 << u32(0x18)
    first_data = u32(0x14)
    blocks_per_group = u32(0x20)
    inodes_per_group = u32(0x28)
    inode_size = u16(0x58)
    compat, incompat, ro_compat = u32(0x5C), u32(0x60), u32(0x64)
    is64 = incompat & 0x80
    desc_size = u16(0xFE) if is64 else 32
    blocks = u32(0x04) | ((u32(0x150) << 32) if is64 else 0)
    reserved_gdt = u16(0xCE) if compat & 0x10 else 0
    groups = -(-(blocks - first_data) // blocks_per_group)
    gdt_blocks = -(-(groups * desc_size) // bs)
    m = Map(image.size)

    def has_super(g):
        if not ro_compat & 1 or g <= 1:
            return True
        for p in (3, 5, 7):
            n = p
            while n < g:
                n *= p
            if n == g:
                return True
        return False

    gdt = image.read_at((first_data + 1) * bs, gdt_blocks * bs)
    tables = []
    for g in range(groups):
        d = gdt[g * desc_size : (g + 1) * desc_size]
        bb, ib, it = struct.unpack_from("<III", d, 0)
        if is64:
            bbh, ibh, ith = struct.unpack_from("<III", d, 0x20)
            bb, ib, it = bb | bbh << 32, ib | ibh << 32, it | ith << 32
        m.add(bb * bs, bb * bs + bs, FSMETA, ROOT_OWNER)
        m.add(ib * bs, ib * bs + bs, FSMETA, ROOT_OWNER)
        tables.append(it)
        if has_super(g):
            start = (first_data + g * blocks_per_group) * bs
            m.add(start, start + (1 + gdt_blocks + reserved_gdt) * bs, FSMETA, ROOT_OWNER)
    if first_data == 0:
        m.add(0, 1024, FSMETA, ROOT_OWNER)

    def inode_pos(ino):
        g, i = divmod(ino - 1, inodes_per_group)
        return tables[g] * bs + i * inode_size

    def extents_of(ino, raw, owner):
        """Physical byte ranges of an inode's data, in logical order; its
        extent tree blocks are recorded as fs metadata."""
        out = []

        def walk(node):
            magic, entries, _max, depth = struct.unpack_from("<HHHH", node, 0)
            if magic != 0xF30A:
                raise SystemExit(f"inode {ino}: bad extent header")
            for e in range(entries):
                at = 12 + 12 * e
                if depth == 0:
                    lblk, length, hi, lo = struct.unpack_from("<IHHI", node, at)
                    if length > 32768:
                        length -= 32768
                    start = (hi << 32 | lo) * bs
                    out.append((lblk, start, start + length * bs))
                else:
                    lblk, lo, hi = struct.unpack_from("<IIH", node, at)
                    leaf = (hi << 32 | lo) * bs
                    m.add(leaf, leaf + bs, FSMETA, owner)
                    walk(image.read_at(leaf, bs))

        walk(raw[0x28:0x28 + 60])
        return [(s, e) for _, s, e in sorted(out)]

    def inode(ino):
        raw = image.read_at(inode_pos(ino), inode_size)
        mode, = struct.unpack_from("<H", raw, 0)
        size = struct.unpack_from("<I", raw, 4)[0] | struct.unpack_from("<I", raw, 0x6C)[0] << 32
        flags, = struct.unpack_from("<I", raw, 0x20)
        return raw, mode, size, flags

    seen = set()
    stack = [(2, "")]
    while stack:
        ino, path = stack.pop()
        if ino in seen:
            continue
        seen.add(ino)
        owner = store_owner(path) if path else ROOT_OWNER
        raw, mode, size, flags = inode(ino)
        pos = inode_pos(ino)
        m.add(pos, pos + inode_size, INODES, owner)
        has_extents = flags & 0x80000
        if stat.S_ISLNK(mode) and (size < 60 and not has_extents):
            continue  # fast symlink: in the inode
        if not has_extents:
            if stat.S_ISREG(mode) and size == 0:
                m.files[("ext4", ino)] = (owner, [], 0)
            continue
        spans = extents_of(ino, raw, owner)
        if stat.S_ISREG(mode):
            key = ("ext4", ino)
            for s, e in spans:
                m.add(s, e, NEW_DATA, owner, key)
            m.files[key] = (owner, spans, size)
        elif stat.S_ISDIR(mode):
            for s, e in spans:
                m.add(s, e, DIRS, owner)
            for s, e in spans:
                block = image.read_at(s, e - s)
                for child, name in ext4_dirents(block, bs):
                    if name not in (".", ".."):
                        stack.append((child, f"{path}/{name}"))
        else:
            for s, e in spans:
                m.add(s, e, INODES, owner)
    # Inode table slots nobody uses: fs metadata.
    for it in tables:
        m.add_background(it * bs, it * bs + inodes_per_group * inode_size, FSMETA, ROOT_OWNER)
    return m


def ext4_dirents(data, bs):
    pos = 0
    while pos + 8 <= len(data):
        ino, rec_len, name_len, _ftype = struct.unpack_from("<IHBB", data, pos)
        if rec_len < 8:
            break
        if ino:
            yield ino, data[pos + 8 : pos + 8 + name_len].decode("utf-8", "surrogateescape")
        pos += rec_len


# ------------------------------------------------------------ the analysis


def file_hashes(image, m):
    """SHA-256 of each regular file's content (its size, from its spans)."""
    out = {}
    for key, (owner, spans, size) in m.files.items():
        h = hashlib.sha256()
        left = size
        for s, e in spans:
            n = min(e - s, left)
            if n <= 0:
                break
            h.update(image.read_at(s, n))
            left -= n
        out[key] = h.digest()
    return out


def analyse(old_img, old_idx, new_img, new_idx, gap):
    old_image, new_image = Image(old_img), Image(new_img)
    maps = {}
    for name, image in (("old", old_image), ("new", new_image)):
        fs = detect(image)
        m = map_erofs(image) if fs == "erofs" else map_ext4(image)
        m.finish(image)
        maps[name] = (fs, m)
    fs, new_map = maps["new"]
    _, old_map = maps["old"]
    old_contents = set(file_hashes(old_image, old_map).values())
    new_hashes = file_hashes(new_image, new_map)
    new_keys = {k for k, h in new_hashes.items() if h not in old_contents and new_map.files[k][2] > 0}
    changed_owners = {new_map.files[k][0] for k in new_keys}
    old_owners = {o for o, _, _ in old_map.files.values()}
    new_owner_set = {o for o, _, _ in new_map.files.values()}
    removed_owners = old_owners - new_owner_set

    def cls_of(r):
        cls = r[2]
        if cls == NEW_DATA:
            return NEW_DATA if r[4] in new_keys else OLD_DATA
        return cls

    new_chunks, old_chunks = read_index(new_idx), read_index(old_idx)
    fetched, ranges = plan(new_chunks, old_chunks, gap)
    fetched_set = set(fetched)

    rows = defaultdict(lambda: [0, 0, 0])  # category -> chunks, raw, compressed
    byte_classes = [0] * 6
    meta_owner_bytes = defaultdict(int)
    for i in fetched:
        off, length, _co, clen, _ = new_chunks[i]
        counts = [0] * 6
        other_meta = False
        for s, e, r in new_map.overlapping(off, off + length):
            c = cls_of(r)
            counts[c] += e - s
            if c in METADATA_CLASSES:
                meta_owner_bytes[r[3]] += e - s
                if r[3] not in changed_owners and r[3] != ROOT_OWNER:
                    other_meta = True
        for c in range(6):
            byte_classes[c] += counts[c]
        if counts[NEW_DATA]:
            cat = "changed content"
        elif any(counts[c] for c in METADATA_CLASSES):
            cat = "metadata, other store paths too" if other_meta else "metadata, changed paths and / only"
        else:
            cat = "moved only"
        row = rows[cat]
        row[0] += 1
        row[1] += length
        row[2] += clen
    gap_bytes = 0
    for r in ranges:
        for i in range(r[0], r[-1] + 1):
            if i not in fetched_set:
                gap_bytes += new_chunks[i][3]
    index_bytes = os.path.getsize(new_idx)

    # The reference: the new content through zstd -9, in image order.
    order = sorted(new_keys, key=lambda k: new_map.files[k][1][0][0] if new_map.files[k][1] else 0)
    proc = subprocess.Popen(["zstd", "-9", "-q", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out = []
    reader = threading.Thread(target=lambda: out.append(len(proc.stdout.read())))
    reader.start()
    raw_new = 0
    for k in order:
        _, spans, size = new_map.files[k]
        left = size
        for s, e in spans:
            n = min(e - s, left)
            if n <= 0:
                break
            proc.stdin.write(new_image.read_at(s, n))
            left -= n
        raw_new += size
    proc.stdin.close()
    reader.join()
    proc.wait()
    content_zst = out[0]

    # Where metadata sits: how many 64 KiB windows of NEW hold any.
    windows = set()
    meta_total = 0
    for s, e, cls, owner, key in new_map.ranges:
        if cls in METADATA_CLASSES:
            meta_total += e - s
            for w in range(s >> 16, ((e - 1) >> 16) + 1):
                windows.add(w)
    return {
        "fs": fs,
        "image": new_image.size,
        "full": sum(c[3] for c in new_chunks),
        "chunks": len(new_chunks),
        "fetched_chunks": len(fetched),
        "requests": len(ranges),
        "rows": {k: v for k, v in rows.items()},
        "gap": gap_bytes,
        "index": index_bytes,
        "byte_classes": dict(zip(CLASS_NAMES, byte_classes)),
        "changed_owners": sorted(changed_owners),
        "removed_owners": sorted(removed_owners),
        "new_files": len(new_keys),
        "new_raw": raw_new,
        "content_zst": content_zst,
        "files": len(new_map.files),
        "metadata_bytes": meta_total,
        "metadata_windows": len(windows),
        "meta_owner_bytes_top": sorted(meta_owner_bytes.items(), key=lambda kv: -kv[1])[:8],
    }


def mib(n):
    return n / (1 << 20)


def report(a):
    total = sum(r[2] for r in a["rows"].values()) + a["gap"]
    ref = a["content_zst"] + a["index"]
    print(
        f"{a['fs']}: image {mib(a['image']):.1f} MiB, {a['files']} files, full object "
        f"{mib(a['full']):.1f} MiB; {a['fetched_chunks']} of {a['chunks']} chunks fetched in "
        f"{a['requests']} requests"
    )
    print(
        f"  changed store paths: {', '.join(a['changed_owners']) or '-'}; removed: "
        f"{', '.join(a['removed_owners']) or '-'}; {a['new_files']} files of new content, "
        f"{mib(a['new_raw']):.2f} MiB raw, {mib(a['content_zst']):.2f} MiB with zstd -9"
    )
    print(f"  {'class of fetched chunk':<36} {'chunks':>6} {'raw MiB':>8} {'download MiB':>12} {'share':>6}")
    order = [
        "changed content",
        "metadata, changed paths and / only",
        "metadata, other store paths too",
        "moved only",
    ]
    for cat in order:
        n, raw, comp = a["rows"].get(cat, [0, 0, 0])
        print(f"  {cat:<36} {n:>6} {mib(raw):>8.2f} {mib(comp):>12.2f} {100 * comp / total if total else 0:>5.1f}%")
    print(f"  {'gaps read through':<36} {'':>6} {'':>8} {mib(a['gap']):>12.2f} {100 * a['gap'] / total if total else 0:>5.1f}%")
    print(f"  {'delta (image object)':<36} {a['fetched_chunks']:>6} {'':>8} {mib(total):>12.2f} "
          f"{100 * total / a['full']:>5.1f}% of full")
    print(f"  {'+ index':<36} {'':>6} {'':>8} {mib(a['index']):>12.2f}")
    print(
        f"  download {mib(total + a['index']):.2f} MiB = {(total + a['index']) / ref:.2f}x the changed content "
        f"compressed plus the index ({mib(ref):.2f} MiB); {(total) / a['content_zst']:.2f}x the content alone"
    )
    bc = a["byte_classes"]
    print("  raw bytes of the fetched chunks: " + ", ".join(f"{k} {mib(v):.2f} MiB" for k, v in bc.items() if v))
    print(
        f"  metadata in the image: {mib(a['metadata_bytes']):.2f} MiB, touching "
        f"{a['metadata_windows']} of {a['image'] >> 16} 64 KiB windows"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("old_image")
    p.add_argument("old_index")
    p.add_argument("new_image")
    p.add_argument("new_index")
    p.add_argument("--gap", type=int, default=32 << 10)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    a = analyse(args.old_image, args.old_index, args.new_image, args.new_index, args.gap)
    if args.json:
        json.dump(a, sys.stdout, indent=1)
        print()
    else:
        report(a)


if __name__ == "__main__":
    main()
