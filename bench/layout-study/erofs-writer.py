#!/usr/bin/env python3
"""A throwaway erofs image writer for the layout study of issue 27.

Called the way nix/builders/root-image.sh calls mkfs.erofs (through
variant.sh's shim), plus layout options:

    erofs-writer.py [--stable-nids] [--order name|refs] -U UUID -T TIME
                    [--quiet] [--all-root] [-E OPTS] OUT TREE

The image is plain erofs as Linux reads it since 5.4 (uncompressed, compact
32-byte inodes, no xattrs, no chunk-based files, no superblock checksum),
laid out so that a store path that did not change keeps its bytes:

  block 0          superblock
  data region      every regular file's blocks, and the full blocks of the
                   few directories larger than a block, store path after
                   store path (sorted by name, i.e. by hash, like
                   /nix/store), each path's files in depth-first name order
  metadata region  (meta_blkaddr) every inode, with directory tails and
                   symlink targets inline: one block-aligned segment per
                   store path, the root's skeleton (/, /nix, /nix/store, the
                   mount points, the links) first

A segment's bytes depend only on its store path's tree, the nids it starts
at and the data addresses of its files. Without --stable-nids the segments
follow each other, so adding or removing a store path renumbers every
segment after it (their dirents change). With --stable-nids each segment
starts at a block derived from its store path's name (home = hash mod a
power-of-two area at least twice the metadata, first free block at or
after it): a segment's nids stay put unless its neighbourhood fills up,
so only its files' data addresses (4 bytes of each inode) move when
store paths before it change size.

Not handled (refused): files of 4 GiB or more, more than 65535 links,
xattrs are not copied (a Nix store has none), device nodes.
"""

import argparse
import hashlib
import os
import stat
import struct
import sys
import uuid as uuidlib

BLOCK = 4096
ISLOT = 32
FT = {
    stat.S_IFREG: 1,
    stat.S_IFDIR: 2,
    stat.S_IFCHR: 3,
    stat.S_IFBLK: 4,
    stat.S_IFIFO: 5,
    stat.S_IFSOCK: 6,
    stat.S_IFLNK: 7,
}
FLAT_PLAIN, FLAT_INLINE = 0, 2


class Node:
    __slots__ = ("path", "mode", "size", "children", "target", "nlink", "nid",
                 "segment", "layout", "blkaddr", "tail", "dir_blocks", "source")

    def __init__(self, path, st):
        self.path = path
        self.mode = st.st_mode
        self.size = st.st_size
        self.children = []  # (name bytes, Node)
        self.target = None
        self.nlink = 0
        self.nid = None
        self.segment = None
        self.layout = FLAT_PLAIN
        self.blkaddr = 0
        self.tail = b""
        self.dir_blocks = b""
        self.source = None


def walk(tree):
    """The tree as Nodes; hard links share a Node."""
    by_ino = {}

    def visit(abspath, rel):
        st = os.lstat(abspath)
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(st.st_mode) and key in by_ino:
            node = by_ino[key]
            node.nlink += 1
            return node
        node = Node(rel, st)
        node.nlink = 1
        by_ino[key] = node
        if stat.S_ISDIR(st.st_mode):
            names = sorted(os.listdir(os.fsencode(abspath)))
            for name in names:
                child = visit(os.path.join(os.fsencode(abspath), name), rel + b"/" + name)
                node.children.append((name, child))
            node.nlink = 2 + sum(1 for _, c in node.children if stat.S_ISDIR(c.mode))
        elif stat.S_ISLNK(st.st_mode):
            node.target = os.readlink(abspath)
            node.size = len(node.target)
        elif stat.S_ISREG(st.st_mode):
            if st.st_size >= 1 << 32:
                sys.exit(f"{abspath}: 4 GiB or more, needs extended inodes")
            node.source = abspath
        else:
            sys.exit(f"{abspath}: special files are not supported")
        return node

    return visit(os.fsencode(tree), b"")


def dirents(node, parent):
    """The directory's blocks: dirents sorted by name, '.' and '..' among
    them, as erofs looks names up by binary search."""
    entries = [(b".", node), (b"..", parent)] + node.children
    entries.sort(key=lambda e: e[0])
    blocks, current = [], []

    def used(es):
        return 12 * len(es) + sum(len(n) for n, _ in es)

    for entry in entries:
        if current and used(current + [entry]) > BLOCK:
            blocks.append(current)
            current = []
        current.append(entry)
    blocks.append(current)
    out = []
    for es in blocks:
        head, names = b"", b""
        nameoff = 12 * len(es)
        for name, child in es:
            head += struct.pack("<QHBB", child.nid, nameoff + len(names), FT[stat.S_IFMT(child.mode)], 0)
            names += name
        out.append(head + names)
    return out


def segment_of(path):
    parts = path.split(b"/")
    if len(parts) >= 4 and parts[1] == b"nix" and parts[2] == b"store":
        return parts[3]
    return None  # the root's skeleton


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-U", dest="uuid", required=True)
    p.add_argument("-T", dest="time", type=int, default=0)
    p.add_argument("-E", dest="extended", default="")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--all-root", action="store_true")
    p.add_argument("--stable-nids", action="store_true")
    p.add_argument("out")
    p.add_argument("tree")
    args = p.parse_args()

    root = walk(args.tree)

    # Segments, each in depth-first pre-order (a Node once, where first met).
    segments = {}
    order = []
    seen = set()

    def collect(node, parent):
        if id(node) in seen:
            return
        seen.add(id(node))
        key = segment_of(node.path)
        if key not in segments:
            segments[key] = []
            order.append(key)
        node.segment = key
        segments[key].append((node, parent))
        for _, child in node.children:
            collect(child, node)

    collect(root, root)
    store_keys = sorted(k for k in order if k is not None)

    # Inode records in a segment: 32 bytes, then an inline tail that must
    # not cross a block; offsets relative to the segment's first block.
    def plan_segment(members):
        layout, pos = [], 0
        for node, parent in members:
            if stat.S_ISDIR(node.mode):
                # Size only: nids are not known yet; the name bytes fix it.
                size = measure_dir(node)
                full, tail = divmod(size, BLOCK)
                if tail + ISLOT > BLOCK:
                    full, tail = -(-size // BLOCK), 0
            elif stat.S_ISLNK(node.mode):
                full, tail = 0, node.size
            else:
                full, tail = 0, 0
            need = ISLOT + tail
            if pos // BLOCK != (pos + need - 1) // BLOCK:
                pos = -(-pos // BLOCK) * BLOCK
            layout.append((node, parent, pos, full, tail))
            pos += -(-need // ISLOT) * ISLOT
        return layout, -(-pos // BLOCK)

    dir_size_cache = {}

    def measure_dir(node):
        if id(node) not in dir_size_cache:
            names = sorted([b".", b".."] + [n for n, _ in node.children])
            blocks, used = 1, 0
            for name in names:
                if used + 12 + len(name) > BLOCK:
                    blocks += 1
                    used = 0
                used += 12 + len(name)
            dir_size_cache[id(node)] = (blocks - 1) * BLOCK + used
        return dir_size_cache[id(node)]

    plans = {k: plan_segment(segments[k]) for k in order}

    # Segment placement in the metadata region, in blocks.
    starts = {None: 0}
    pos = plans[None][1]
    if args.stable_nids:
        total = sum(plans[k][1] for k in order)
        area = 256
        while area < 2 * total:
            area *= 2
        homes = sorted((int.from_bytes(hashlib.sha256(k).digest()[:8], "big") % area, k) for k in store_keys)
        for home, k in homes:
            start = max(home, pos)
            starts[k] = start
            pos = start + plans[k][1]
        meta_blocks = max(pos, area)
    else:
        for k in store_keys:
            starts[k] = pos
            pos += plans[k][1]
        meta_blocks = pos

    # nids.
    for k in order:
        for node, parent, off, full, tail in plans[k][0]:
            node.nid = (starts[k] * BLOCK + off) // ISLOT
    if root.nid != 0:
        sys.exit("the root must have nid 0")

    # Data region: files (and full directory blocks) in store path order.
    data_block = 1
    files = []
    for k in [None] + store_keys:
        for node, parent, off, full, tail in plans[k][0]:
            if stat.S_ISREG(node.mode) and node.size:
                node.layout = FLAT_PLAIN
                node.blkaddr = data_block
                files.append(node)
                data_block += -(-node.size // BLOCK)
            elif stat.S_ISDIR(node.mode):
                blocks = dirents(node, parent)
                content = b"".join(b.ljust(BLOCK, b"\0") for b in blocks[:-1]) + blocks[-1]
                assert len(content) == measure_dir(node)
                node.size = len(content)
                node.dir_blocks = content[: full * BLOCK]
                node.tail = content[full * BLOCK :]
                if tail or not full:
                    node.layout = FLAT_INLINE
                else:
                    node.layout = FLAT_PLAIN
                if full:
                    node.blkaddr = data_block
                    files.append(node)
                    data_block += full
            elif stat.S_ISLNK(node.mode):
                node.layout = FLAT_INLINE
                node.tail = node.target

    meta_blkaddr = data_block
    total_blocks = meta_blkaddr + meta_blocks

    with open(args.out, "wb") as out:
        out.truncate(total_blocks * BLOCK)
        sb = struct.pack(
            "<IIIBBHQQIIII16s16sIHHH",
            0xE0F5E1E2, 0, 0, 12, 0, root.nid, sum(len(plans[k][0]) for k in order),
            args.time, 0, total_blocks, meta_blkaddr, 0,
            uuidlib.UUID(args.uuid).bytes, b"", 0, 0, 0, 0,
        )
        out.seek(1024)
        out.write(sb.ljust(128, b"\0"))
        for node in files:
            out.seek(node.blkaddr * BLOCK)
            if node.source:
                with open(node.source, "rb") as f:
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
            else:
                out.write(node.dir_blocks)
        for k in order:
            base = (meta_blkaddr + starts[k]) * BLOCK
            for node, parent, off, full, tail in plans[k][0]:
                fmt = node.layout << 1
                has_blocks = (stat.S_ISREG(node.mode) and node.size) or node.dir_blocks
                i_u = node.blkaddr if has_blocks else 0
                if node.nlink > 0xFFFF:
                    sys.exit(f"{node.path}: too many links for a compact inode")
                rec = struct.pack(
                    "<HHHHIIIIHHI", fmt, 0, node.mode, node.nlink, node.size, 0, i_u,
                    node.nid & 0xFFFFFFFF, 0, 0, 0,
                )
                out.seek(base + off)
                out.write(rec)
                if node.layout == FLAT_INLINE and node.tail:
                    out.write(node.tail)


if __name__ == "__main__":
    main()
