#!/usr/bin/env python3
"""A throwaway ext4 image writer for the layout study of issue 27.

Called the way nix/builders/root-image.sh calls mkfs.ext4 (through
variant.sh's shim, which also makes its resize2fs a no-op: the image comes
out at its final size), plus layout options:

    ext4-writer.py [--stable-inodes] ... -U SEED_UUID ... -d TREE OUT

The image is ext4 as Linux reads it since 3.18 (extents, flex_bg,
sparse_super2 without backups, metadata_csum with the checksum seed kept in
the superblock, read-only; no journal, no htree: directories are linear),
laid out so that a store path that did not change keeps its bytes:

  block 0, 1..     superblock, group descriptors
  data region      store path after store path (sorted by name, i.e. by
                   hash, like /nix/store): its directory blocks, then its
                   files' blocks, in depth-first name order
  tables           the inode table (one linear array: every group's table,
                   back to back), then the block and inode bitmaps

An inode's number is its slot in the inode table; directory blocks hold
the numbers of their entries and a checksum seeded by their own inode's
number. Without --stable-inodes, numbers are handed out store path after
store path, so adding one renumbers everything after it (and changes every
directory block there). With --stable-inodes each store path's inodes start
at a slot derived from its name (home = hash mod a power-of-two space at
least twice the inode count, first free slot at or after it): directory
blocks of an unchanged store path keep their bytes; its inodes change
only in their extents (and checksum) when the data before them moved.

Not handled (refused): files of more than 4 extents (512 MiB), special
files; xattrs are not copied.
"""

import argparse
import hashlib
import os
import stat
import struct
import sys
import uuid as uuidlib

try:
    from crc32c import crc32c as _crc32c

    def crc_update(crc, data):
        """The kernel's ext4_chksum: the raw CRC32C register, no inversion."""
        return (~_crc32c(data, (~crc) & 0xFFFFFFFF)) & 0xFFFFFFFF

except ImportError:  # pure Python fallback (slow)
    _T = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        _T.append(c)

    def crc_update(crc, data):
        for b in data:
            crc = _T[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc


BS = 4096
BPG = 32768
ISIZE = 256
FIRST_INO = 11
TIME = 1  # root-image.sh's epoch: 1970-01-01 00:00:01


class Node:
    __slots__ = ("path", "mode", "size", "children", "target", "nlink", "ino",
                 "segment", "source", "blocks", "nblocks", "dir_data")

    def __init__(self, path, st):
        self.path = path
        self.mode = st.st_mode
        self.size = st.st_size
        self.children = []
        self.target = None
        self.nlink = 1
        self.ino = None
        self.segment = None
        self.source = None
        self.blocks = None  # first block of its data
        self.nblocks = 0
        self.dir_data = None


def walk(tree):
    by_ino = {}

    def visit(abspath, rel):
        st = os.lstat(abspath)
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(st.st_mode) and key in by_ino:
            by_ino[key].nlink += 1
            return by_ino[key]
        node = Node(rel, st)
        by_ino[key] = node
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(abspath)):
                node.children.append((name, visit(os.path.join(abspath, name), rel + b"/" + name)))
            node.nlink = 2 + sum(1 for _, c in node.children if stat.S_ISDIR(c.mode))
        elif stat.S_ISLNK(st.st_mode):
            node.target = os.readlink(abspath)
            node.size = len(node.target)
        elif stat.S_ISREG(st.st_mode):
            node.source = abspath
        else:
            sys.exit(f"{abspath}: special files are not supported")
        return node

    return visit(os.fsencode(tree), b"")


def segment_of(path):
    parts = path.split(b"/")
    if len(parts) >= 4 and parts[1] == b"nix" and parts[2] == b"store":
        return parts[3]
    return None


FT = {stat.S_IFREG: 1, stat.S_IFDIR: 2, stat.S_IFLNK: 7}


def dir_blocks(node, parent, seed):
    """Linear directory blocks with checksum tails."""
    entries = [(b".", node), (b"..", parent)] + node.children
    blocks, cur, used = [], [], 0
    limit = BS - 12
    for name, child in entries:
        need = (8 + len(name) + 3) & ~3
        if cur and used + need > limit:
            blocks.append(cur)
            cur, used = [], 0
        cur.append((name, child))
        used += need
    blocks.append(cur)
    out = []
    ino_seed = crc_update(crc_update(seed, struct.pack("<I", node.ino)), struct.pack("<I", 0))
    for es in blocks:
        b = bytearray()
        for i, (name, child) in enumerate(es):
            rec = (8 + len(name) + 3) & ~3
            if i == len(es) - 1:
                rec = limit - len(b)
            b += struct.pack("<IHBB", child.ino, rec, len(name), FT[stat.S_IFMT(child.mode)])
            b += name
            b += b"\0" * (rec - 8 - len(name))
        assert len(b) == limit
        csum = crc_update(ino_seed, bytes(b))
        b += struct.pack("<IHBBI", 0, 12, 0, 0xDE, csum)
        out.append(bytes(b))
    return out


def dir_block_count(node):
    names = [b".", b".."] + [n for n, _ in node.children]
    count, used = 1, 0
    for name in names:
        need = (8 + len(name) + 3) & ~3
        if used and used + need > BS - 12:
            count += 1
            used = 0
        used += need
    return count


def inode_bytes(node, seed):
    mode = node.mode
    flags = 0
    i_block = b""
    size = node.size
    blocks512 = node.nblocks * (BS // 512)
    if stat.S_ISLNK(mode) and node.size < 60:
        i_block = node.target
    else:
        flags |= 0x80000  # EXTENTS_FL
        exts = []
        left, start, lblk = node.nblocks, node.blocks, 0
        while left:
            n = min(left, 32768)
            exts.append(struct.pack("<IHHI", lblk, n, start >> 32, start & 0xFFFFFFFF))
            left -= n
            start += n
            lblk += n
        if len(exts) > 4:
            sys.exit(f"{node.path}: more than 4 extents")
        i_block = struct.pack("<HHHHI", 0xF30A, len(exts), 4, 0, 0) + b"".join(exts)
    if stat.S_ISDIR(mode):
        size = node.nblocks * BS
    raw = bytearray(ISIZE)
    struct.pack_into("<HHIIIIIHHII", raw, 0, mode, 0, size & 0xFFFFFFFF, TIME, TIME, TIME, 0, 0,
                     node.nlink, blocks512, flags)
    raw[0x28 : 0x28 + len(i_block)] = i_block
    struct.pack_into("<I", raw, 0x6C, size >> 32)
    struct.pack_into("<H", raw, 0x80, 32)  # i_extra_isize
    struct.pack_into("<I", raw, 0x90, TIME)  # crtime
    iseed = crc_update(crc_update(seed, struct.pack("<I", node.ino)), struct.pack("<I", 0))
    csum = crc_update(iseed, bytes(raw))
    struct.pack_into("<H", raw, 0x7C, csum & 0xFFFF)
    struct.pack_into("<H", raw, 0x82, csum >> 16)
    return bytes(raw)


def main():
    # mkfs.ext4's command line as root-image.sh writes it: only -U, -d and
    # the last argument (the image) matter here.
    argv = sys.argv[1:]
    args = argparse.Namespace(
        seed_uuid=argv[argv.index("-U") + 1],
        tree=argv[argv.index("-d") + 1],
        stable_inodes="--stable-inodes" in argv,
        out=argv[-1],
    )
    seed = crc_update(0xFFFFFFFF, uuidlib.UUID(args.seed_uuid).bytes)

    root = walk(args.tree)
    if not any(n == b"lost+found" for n, _ in root.children):
        lf = Node(b"/lost+found", os.lstat(args.tree))
        lf.mode = stat.S_IFDIR | 0o700
        lf.nlink = 2
        root.children.append((b"lost+found", lf))
        root.children.sort(key=lambda c: c[0])
        root.nlink += 1

    # Segments in depth-first pre-order, a node once.
    segments, order, seen = {}, [], set()

    def collect(node, parent):
        if id(node) in seen:
            return
        seen.add(id(node))
        key = segment_of(node.path)
        if key not in segments:
            segments[key] = []
            order.append(key)
        segments[key].append((node, parent))
        for _, child in node.children:
            collect(child, node)

    collect(root, root)
    store_keys = sorted(k for k in order if k is not None)

    # Inode numbers: 2 is the root, 11 lost+found, the skeleton after; each
    # store path's inodes in one run.
    lost = next(c for n, c in root.children if n == b"lost+found")
    root.ino, lost.ino = 2, 11
    nxt = 12
    for node, _ in segments[None]:
        if node.ino is None:
            node.ino = nxt
            nxt += 1
    total = sum(len(segments[k]) for k in order) + FIRST_INO
    if args.stable_inodes:
        space = 1024
        while space < 2 * total:
            space *= 2
        homes = sorted((int.from_bytes(hashlib.sha256(k).digest()[:8], "big") % space, k) for k in store_keys)
        for home, k in homes:
            nxt = max(nxt, home + 1)
            for node, _ in segments[k]:
                node.ino = nxt
                nxt += 1
        inode_space = max(nxt, space)
    else:
        for k in store_keys:
            for node, _ in segments[k]:
                node.ino = nxt
                nxt += 1
        inode_space = nxt

    # Blocks: data region first. The group count depends on the size, the
    # descriptor blocks on the group count: iterate until stable.
    def layout(gdt_blocks):
        block = 1 + gdt_blocks
        for k in [None] + store_keys:
            for node, parent in segments[k]:
                if stat.S_ISDIR(node.mode):
                    node.nblocks = dir_block_count(node)
                    node.blocks = block
                    block += node.nblocks
            for node, parent in segments[k]:
                if stat.S_ISREG(node.mode) and node.size:
                    node.nblocks = -(-node.size // BS)
                elif stat.S_ISLNK(node.mode) and node.size >= 60:
                    node.nblocks = 1
                else:
                    continue
                node.blocks = block
                block += node.nblocks
        return block

    gdt_blocks = 1
    while True:
        data_end = layout(gdt_blocks)
        # Tables after the data: inode table, then the bitmaps.
        groups = 1
        while True:
            ipg = -(-inode_space // groups)
            ipg = -(-ipg // 16) * 16  # a whole number of table blocks
            if ipg > BS * 8:
                groups += 1
                continue
            itable_blocks = groups * ipg * ISIZE // BS
            total_blocks = data_end + itable_blocks + 2 * groups
            need = -(-total_blocks // BPG)
            if need <= groups:
                break
            groups = need
        need_gdt = -(-groups * 32 // BS)
        if need_gdt == gdt_blocks:
            break
        gdt_blocks = need_gdt
    itable = data_end
    bbitmap = itable + itable_blocks
    ibitmap = bbitmap + groups
    blocks_count = ibitmap + groups

    nodes = [n for k in order for n, _ in segments[k]]
    parents = {id(n): p for k in order for n, p in segments[k]}
    with open(args.out, "wb") as out:
        out.truncate(blocks_count * BS)
        # Data region.
        for k in [None] + store_keys:
            for node, parent in segments[k]:
                if stat.S_ISDIR(node.mode):
                    out.seek(node.blocks * BS)
                    out.write(b"".join(dir_blocks(node, parent, seed)))
                elif node.nblocks and node.source:
                    out.seek(node.blocks * BS)
                    with open(node.source, "rb") as f:
                        while chunk := f.read(1 << 20):
                            out.write(chunk)
                elif node.nblocks:
                    out.seek(node.blocks * BS)
                    out.write(node.target)
        # Inode table (reserved inodes 1, 3-10 stay zero).
        for node in nodes:
            out.seek(itable * BS + (node.ino - 1) * ISIZE)
            out.write(inode_bytes(node, seed))
        # Bitmaps and descriptors.
        used_inos = {n.ino for n in nodes} | set(range(1, FIRST_INO))
        dirs_by_group = [0] * groups
        for n in nodes:
            if stat.S_ISDIR(n.mode):
                dirs_by_group[(n.ino - 1) // ipg] += 1
        gdt = bytearray()
        free_blocks_total = free_inodes_total = 0
        for g in range(groups):
            first = g * BPG
            count = min(BPG, blocks_count - first)
            bb = bytearray(b"\xff" * (BS))  # every block is used; past the end padded
            ib = bytearray(BS)
            free_inodes = 0
            for i in range(ipg):
                if g * ipg + i + 1 in used_inos:
                    ib[i >> 3] |= 1 << (i & 7)
                else:
                    free_inodes += 1
            for i in range(ipg, BS * 8):
                ib[i >> 3] |= 1 << (i & 7)
            out.seek((bbitmap + g) * BS)
            out.write(bb)
            out.seek((ibitmap + g) * BS)
            out.write(ib)
            bcs = crc_update(seed, bytes(bb[: BPG // 8]))
            ics = crc_update(seed, bytes(ib[: ipg // 8]))
            d = bytearray(struct.pack(
                "<IIIHHHHIHHHH", bbitmap + g, ibitmap + g, itable + g * ipg * ISIZE // BS,
                0, free_inodes, dirs_by_group[g], 4, 0, bcs & 0xFFFF, ics & 0xFFFF, 0, 0,
            ))
            c = crc_update(seed, struct.pack("<I", g))
            c = crc_update(c, bytes(d))
            struct.pack_into("<H", d, 0x1E, c & 0xFFFF)
            gdt += d
            free_inodes_total += free_inodes
            del count
        out.seek(BS)
        out.write(bytes(gdt))
        # Superblock.
        sb = bytearray(1024)
        struct.pack_into("<IIIIIIIIIIIIIHhHHHHIIIIHHIHH", sb, 0,
                         groups * ipg, blocks_count, 0, free_blocks_total, free_inodes_total,
                         0, 2, 2, BPG, BPG, ipg, 0, TIME, 0, -1, 0xEF53, 1, 1, 0, TIME, 0, 0, 1,
                         0, 0, FIRST_INO, ISIZE, 0)
        compat = 0x200  # sparse_super2
        incompat = 0x2 | 0x40 | 0x200 | 0x2000  # filetype, extents, flex_bg, csum_seed
        ro_compat = 0x2 | 0x8 | 0x20 | 0x40 | 0x400 | 0x1000  # large_file, huge_file, dir_nlink, extra_isize, metadata_csum, read-only
        struct.pack_into("<III", sb, 0x5C, compat, incompat, ro_compat)
        sb[0x68:0x78] = uuidlib.UUID(args.seed_uuid).bytes
        sb[0xEC:0xFC] = uuidlib.UUID(args.seed_uuid).bytes  # hash seed
        sb[0xFC] = 1  # half_md4
        struct.pack_into("<H", sb, 0xFE, 32)
        struct.pack_into("<I", sb, 0x108, TIME)  # mkfs time
        struct.pack_into("<HH", sb, 0x15C, 32, 32)
        sb[0x174] = 4  # log groups per flex
        sb[0x175] = 1  # crc32c
        struct.pack_into("<I", sb, 0x270, seed)
        struct.pack_into("<I", sb, 0x3FC, crc_update(0xFFFFFFFF, bytes(sb[:0x3FC])))
        out.seek(1024)
        out.write(bytes(sb))
    del parents


if __name__ == "__main__":
    main()
