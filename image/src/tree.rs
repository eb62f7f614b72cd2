//! The tree a root image holds, and the store-path plan both writers share.
//!
//! [`Tree::walk`] reads a directory into [`Node`]s: regular files, hard
//! links (one node, its link count), directories (children sorted by name
//! bytes, as both formats look names up) and symlinks. Anything a root image
//! cannot hold is refused with the path named: device nodes, FIFOs,
//! sockets, files of 4 GiB or more. Extended attributes are not copied (a
//! Nix store has none), nor owners or times: every image is owned by root
//! with fixed times.
//!
//! [`Plan`] cuts the tree into segments: the root's skeleton (everything not
//! under `/nix/store/<name>`) first, then one segment per store path in
//! `/nix/store` order (name bytes). A writer lays out each segment's
//! metadata as one run, so that a store path's metadata depends only on its
//! own tree and where its run starts.
//!
//! [`place`] decides where each run starts: at a home derived from the store
//! path's name ([`home`]), or the first free position after it. Numbering
//! runs one after the other would renumber every store path after one that
//! was added, removed or grew, and with the numbers every directory entry
//! naming them; with homes, an added or removed store path leaves the
//! others' numbers as they were unless it lands in their neighbourhood
//! (docs/delta.md, "Layout for small deltas: the study").

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Files of this size or more are refused: both writers keep 32-bit sizes
/// (erofs's compact inodes; the ext4 writer's single size word).
pub const MAX_FILE_SIZE: u64 = 1 << 32;

/// Why a directory cannot become a root image.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {kind} cannot be in a root image")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("{path}: {size} bytes, a root image holds files under 4 GiB")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
}

/// Why a walked file's content could not be copied into an image.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed while the image was written ({expected} bytes walked, {found} read)")]
    Changed {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
}

/// Reads the file `source` through `buffer`, handing each chunk to `sink`;
/// refuses it if it is no longer the `size` bytes the walk saw (reading at
/// most one byte more), so an image never holds a file cut or grown midway.
pub(crate) fn copy_content<E: From<ContentError>>(
    source: &Path,
    size: u64,
    buffer: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let read_error = |error| ContentError::Read {
        path: source.to_owned(),
        source: error,
    };
    let mut reader = fs::File::open(source).map_err(read_error)?.take(size + 1);
    let mut copied = 0u64;
    loop {
        let n = reader.read(buffer).map_err(read_error)?;
        copied += n as u64;
        if n == 0 || copied > size {
            break;
        }
        sink(&buffer[..n])?;
    }
    if copied != size {
        return Err(ContentError::Changed {
            path: source.to_owned(),
            expected: size,
            found: copied,
        }
        .into());
    }
    Ok(())
}

/// A node's index in [`Tree::nodes`].
pub type NodeId = usize;

/// What a node is, with what the writers need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: its size and where to read its content.
    File { size: u64, source: PathBuf },
    /// A directory: its entries (without `.` and `..`) sorted by name bytes.
    Dir { children: Vec<(Vec<u8>, NodeId)> },
    /// A symbolic link and its target.
    Symlink { target: Vec<u8> },
}

/// A file, directory or symlink; hard links to one file share one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`); the type is [`Node::kind`].
    pub permissions: u16,
    /// Links to the node inside the tree: the number of paths naming a file,
    /// 2 plus its subdirectories for a directory.
    pub nlink: u32,
    /// Where the node was first met in the walk, relative to the root
    /// (empty for the root): for error messages and the plan's segments.
    pub path: PathBuf,
}

/// The file type bits of `st_mode` (`S_IFREG`, `S_IFDIR`, `S_IFLNK`).
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;

/// A directory entry's file type, in the codes erofs and ext4 share
/// (Linux's `FT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileType {
    Regular = 1,
    Directory = 2,
    Symlink = 7,
}

impl Node {
    /// The file type its directory entries store.
    pub(crate) fn file_type(&self) -> FileType {
        match self.kind {
            Kind::File { .. } => FileType::Regular,
            Kind::Dir { .. } => FileType::Directory,
            Kind::Symlink { .. } => FileType::Symlink,
        }
    }

    /// `st_mode`: type and permission bits, as both formats store it.
    pub fn mode(&self) -> u16 {
        let file_type = match self.kind {
            Kind::File { .. } => S_IFREG,
            Kind::Dir { .. } => S_IFDIR,
            Kind::Symlink { .. } => S_IFLNK,
        };
        file_type | self.permissions
    }

    /// The size as `st_size` reports it: content bytes of a file, target
    /// bytes of a symlink; 0 for a directory, whose size is the writer's.
    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::File { size, .. } => *size,
            Kind::Symlink { target } => target.len() as u64,
            Kind::Dir { .. } => 0,
        }
    }

    /// The directory's entries, none for other nodes.
    pub fn children(&self) -> &[(Vec<u8>, NodeId)] {
        match &self.kind {
            Kind::Dir { children } => children,
            _ => &[],
        }
    }
}

/// A directory tree as a root image will hold it.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Every node once; the root is [`Tree::ROOT`].
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The root directory's id.
    pub const ROOT: NodeId = 0;

    /// Reads the tree under `root` (not following symlinks).
    pub fn walk(root: &Path) -> Result<Tree, WalkError> {
        let meta = lstat(root)?;
        if !meta.is_dir() {
            return Err(WalkError::NotADirectory {
                path: root.to_owned(),
            });
        }
        let mut walker = Walker {
            nodes: Vec::new(),
            hard_links: HashMap::new(),
        };
        walker.visit(root, PathBuf::new(), &meta)?;
        Ok(Tree {
            nodes: walker.nodes,
        })
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }
}

fn lstat(path: &Path) -> Result<fs::Metadata, WalkError> {
    fs::symlink_metadata(path).map_err(|source| WalkError::Io {
        path: path.to_owned(),
        source,
    })
}

struct Walker {
    nodes: Vec<Node>,
    /// Non-directories seen by (device, inode), so hard links share a node.
    hard_links: HashMap<(u64, u64), NodeId>,
}

impl Walker {
    fn visit(
        &mut self,
        abs: &Path,
        rel: PathBuf,
        meta: &fs::Metadata,
    ) -> Result<NodeId, WalkError> {
        let file_type = meta.file_type();
        if !file_type.is_dir() {
            if let Some(&id) = self.hard_links.get(&(meta.dev(), meta.ino())) {
                self.nodes[id].nlink += 1;
                return Ok(id);
            }
        }
        let unsupported = |kind| WalkError::Unsupported {
            path: abs.to_owned(),
            kind,
        };
        let kind = if file_type.is_file() {
            if meta.len() >= MAX_FILE_SIZE {
                return Err(WalkError::TooLarge {
                    path: abs.to_owned(),
                    size: meta.len(),
                });
            }
            Kind::File {
                size: meta.len(),
                source: abs.to_owned(),
            }
        } else if file_type.is_symlink() {
            let target = fs::read_link(abs).map_err(|source| WalkError::Io {
                path: abs.to_owned(),
                source,
            })?;
            Kind::Symlink {
                target: target.into_os_string().into_vec(),
            }
        } else if file_type.is_dir() {
            Kind::Dir {
                children: Vec::new(),
            }
        } else if file_type.is_block_device() || file_type.is_char_device() {
            return Err(unsupported("a device node"));
        } else if file_type.is_fifo() {
            return Err(unsupported("a FIFO"));
        } else if file_type.is_socket() {
            return Err(unsupported("a socket"));
        } else {
            return Err(unsupported("a file of unknown type"));
        };
        let id = self.nodes.len();
        self.nodes.push(Node {
            kind,
            permissions: (meta.mode() & 0o7777) as u16,
            nlink: if file_type.is_dir() { 2 } else { 1 },
            path: rel.clone(),
        });
        if !file_type.is_dir() {
            self.hard_links.insert((meta.dev(), meta.ino()), id);
            return Ok(id);
        }

        let io_error = |source| WalkError::Io {
            path: abs.to_owned(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(abs).map_err(io_error)? {
            names.push(entry.map_err(io_error)?.file_name().into_vec());
        }
        names.sort();
        let mut children = Vec::with_capacity(names.len());
        for name in names {
            let child_abs = abs.join(OsStr::from_bytes(&name));
            let child_meta = lstat(&child_abs)?;
            let child = self.visit(&child_abs, rel.join(OsStr::from_bytes(&name)), &child_meta)?;
            if child_meta.is_dir() {
                self.nodes[id].nlink += 1;
            }
            children.push((name, child));
        }
        self.nodes[id].kind = Kind::Dir { children };
        Ok(id)
    }
}

/// A node in a segment, with the directory it was first met in (the root's
/// parent is the root), which a directory's `..` entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub node: NodeId,
    pub parent: NodeId,
}

/// The nodes of the root's skeleton or of one store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The store path's name (`/nix/store/<name>`), `None` for the skeleton.
    pub store_path: Option<Vec<u8>>,
    /// Its nodes in depth-first pre-order by name, each once: a hard-linked
    /// node where it was first met. The skeleton's first member is the root.
    pub members: Vec<Member>,
}

/// The tree cut into segments: the skeleton first, then the store paths
/// sorted by name bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub segments: Vec<Segment>,
}

impl Plan {
    /// Cuts `tree` into segments. A node belongs to the store path it was
    /// first met under: `/nix/store/<name>` and everything below it.
    pub fn new(tree: &Tree) -> Plan {
        let mut skeleton = Segment {
            store_path: None,
            members: Vec::new(),
        };
        let mut store_paths: HashMap<Vec<u8>, Vec<Member>> = HashMap::new();
        let mut seen = vec![false; tree.nodes.len()];
        // Depth-first pre-order with an explicit stack (children pushed in
        // reverse so that they pop by name); the path's components decide
        // the segment.
        let mut stack = vec![(Tree::ROOT, Tree::ROOT, Vec::<Vec<u8>>::new())];
        while let Some((node, parent, components)) = stack.pop() {
            if std::mem::replace(&mut seen[node], true) {
                continue;
            }
            let member = Member { node, parent };
            match store_path_of(&components) {
                Some(name) => store_paths.entry(name.to_vec()).or_default().push(member),
                None => skeleton.members.push(member),
            }
            for (name, child) in tree.nodes[node].children().iter().rev() {
                let mut child_components = components.clone();
                child_components.push(name.clone());
                stack.push((*child, node, child_components));
            }
        }
        let mut names: Vec<Vec<u8>> = store_paths.keys().cloned().collect();
        names.sort();
        let mut segments = vec![skeleton];
        for name in names {
            let members = store_paths.remove(&name).unwrap_or_default();
            segments.push(Segment {
                store_path: Some(name),
                members,
            });
        }
        Plan { segments }
    }
}

/// The store path a path (as components below the root) lies in.
fn store_path_of(components: &[Vec<u8>]) -> Option<&[u8]> {
    match components {
        [nix, store, name, ..] if nix == b"nix" && store == b"store" => Some(name),
        _ => None,
    }
}

/// The smallest power of two at least `minimum` and at least twice `total`:
/// a space half empty, so that homes rarely collide.
pub fn space_for(total: u64, minimum: u64) -> u64 {
    total
        .saturating_mul(2)
        .max(minimum)
        .max(1)
        .checked_next_power_of_two()
        .expect("a numbering space beyond 2^63")
}

/// A store path's home in a space of `space` positions: the first 8 bytes of
/// SHA-256 of its name, big-endian, modulo `space`. Depends on the name
/// alone, so it is the same in every image holding the store path.
pub fn home(name: &[u8], space: u64) -> u64 {
    let digest = Sha256::digest(name);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % space
}

/// Where each run starts and where the last one ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Each run's first position, in the order the runs were given.
    pub starts: Vec<u64>,
    /// The position after the run that ends last.
    pub end: u64,
}

/// Places runs of positions (erofs metadata blocks, ext4 inodes), one per
/// store path given as (name, size): in the order of their [`home`]s (ties
/// by name), each at its home or, if that is taken, at the first free
/// position after the runs placed before it. Positions below `first_free`
/// are taken already (the skeleton's). Runs may end past `space`: the space
/// decides homes, not a bound.
pub fn place<'a>(
    runs: impl IntoIterator<Item = (&'a [u8], u64)>,
    first_free: u64,
    space: u64,
) -> Placement {
    let runs: Vec<(&[u8], u64)> = runs.into_iter().collect();
    let mut order: Vec<(u64, &[u8], usize)> = runs
        .iter()
        .enumerate()
        .map(|(index, (name, _))| (home(name, space), *name, index))
        .collect();
    order.sort();
    let mut starts = vec![0; runs.len()];
    let mut next = first_free;
    for (home, _, index) in order {
        let start = home.max(next);
        starts[index] = start;
        next = start + runs[index].1;
    }
    Placement { starts, end: next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn store_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("nix/store/bbb-two/bin")).unwrap();
        fs::create_dir_all(root.join("nix/store/aaa-one/lib")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("nix/store/aaa-one/lib/x"), b"x").unwrap();
        fs::write(root.join("nix/store/bbb-two/bin/tool"), b"tool").unwrap();
        fs::set_permissions(
            root.join("nix/store/bbb-two/bin/tool"),
            fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        fs::hard_link(
            root.join("nix/store/aaa-one/lib/x"),
            root.join("nix/store/bbb-two/bin/x-link"),
        )
        .unwrap();
        symlink("/nix/store/bbb-two/bin/tool", root.join("bin")).unwrap();
        dir
    }

    fn path_of(tree: &Tree, id: NodeId) -> String {
        tree.node(id).path.display().to_string()
    }

    #[test]
    fn walk_reads_types_links_and_sorted_children() {
        let dir = store_tree();
        let tree = Tree::walk(dir.path()).unwrap();
        let root = tree.node(Tree::ROOT);
        let names: Vec<&[u8]> = root.children().iter().map(|(n, _)| &n[..]).collect();
        assert_eq!(names, [&b"bin"[..], b"etc", b"nix"]);
        assert_eq!(root.nlink, 4, "2 + etc + nix");
        assert_eq!(root.mode() & 0o170000, 0o040000);

        let by_path = |p: &str| {
            (0..tree.nodes.len())
                .find(|&id| path_of(&tree, id) == p)
                .unwrap_or_else(|| panic!("{p} not walked"))
        };
        let x = by_path("nix/store/aaa-one/lib/x");
        assert_eq!(tree.node(x).nlink, 2);
        assert_eq!(tree.node(x).size(), 1);
        let two_bin = tree.node(by_path("nix/store/bbb-two/bin"));
        assert!(
            two_bin.children().contains(&(b"x-link".to_vec(), x)),
            "the hard link shares the node"
        );
        let tool = tree.node(by_path("nix/store/bbb-two/bin/tool"));
        assert_eq!(tool.mode(), 0o100555);
        let bin = tree.node(by_path("bin"));
        assert_eq!(
            bin.kind,
            Kind::Symlink {
                target: b"/nix/store/bbb-two/bin/tool".to_vec()
            }
        );
        assert_eq!(bin.size(), 27);
        assert_eq!(bin.mode(), 0o120777);
    }

    /// The walk of `root` refuses `path` as `kind`, naming it.
    fn assert_refused_as_unsupported(root: &Path, kind: &str, path: &Path) {
        let err = Tree::walk(root).unwrap_err();
        assert!(
            matches!(&err, WalkError::Unsupported { kind: k, .. } if *k == kind),
            "{err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn walk_refuses_fifos_and_sockets_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("sub/pipe");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        assert_refused_as_unsupported(dir.path(), "a FIFO", &fifo);
        fs::remove_file(&fifo).unwrap();

        let socket = dir.path().join("sub/sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_refused_as_unsupported(dir.path(), "a socket", &socket);
    }

    #[test]
    fn walk_refuses_device_nodes() {
        // mknod needs root, as the machine tests do (CI runs as root).
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("null");
        let status = std::process::Command::new("mknod")
            .arg(&device)
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(status.success(), "mknod (needs root)");
        assert_refused_as_unsupported(dir.path(), "a device node", &device);
        // A symlink to a device node is fine.
        fs::remove_file(&device).unwrap();
        symlink("/dev/null", &device).unwrap();
        Tree::walk(dir.path()).unwrap();
    }

    #[test]
    fn walk_refuses_files_of_4_gib() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        let file = fs::File::create(&big).unwrap();
        file.set_len(MAX_FILE_SIZE).unwrap(); // sparse
        let err = Tree::walk(dir.path()).unwrap_err();
        assert!(
            matches!(err, WalkError::TooLarge { size, .. } if size == MAX_FILE_SIZE),
            "{err}"
        );
        assert!(
            err.to_string().contains(&big.display().to_string()),
            "{err}"
        );
        file.set_len(MAX_FILE_SIZE - 1).unwrap();
        Tree::walk(dir.path()).unwrap();
    }

    #[test]
    fn walk_refuses_a_root_that_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"").unwrap();
        let err = Tree::walk(&dir.path().join("f")).unwrap_err();
        assert!(matches!(err, WalkError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn plan_puts_the_skeleton_first_then_store_paths_by_name_in_pre_order() {
        let dir = store_tree();
        let tree = Tree::walk(dir.path()).unwrap();
        let plan = Plan::new(&tree);
        let listing: Vec<(Option<String>, Vec<String>)> = plan
            .segments
            .iter()
            .map(|s| {
                (
                    s.store_path
                        .as_ref()
                        .map(|n| String::from_utf8_lossy(n).into_owned()),
                    s.members.iter().map(|m| path_of(&tree, m.node)).collect(),
                )
            })
            .collect();
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            listing,
            [
                (None, strings(&["", "bin", "etc", "nix", "nix/store"])),
                (
                    Some("aaa-one".into()),
                    strings(&[
                        "nix/store/aaa-one",
                        "nix/store/aaa-one/lib",
                        "nix/store/aaa-one/lib/x"
                    ])
                ),
                (
                    // x-link is aaa-one's x, met there first: not repeated.
                    Some("bbb-two".into()),
                    strings(&[
                        "nix/store/bbb-two",
                        "nix/store/bbb-two/bin",
                        "nix/store/bbb-two/bin/tool"
                    ])
                ),
            ]
        );
        let root = plan.segments[0].members[0];
        assert_eq!((root.node, root.parent), (Tree::ROOT, Tree::ROOT));
        for segment in &plan.segments {
            for member in &segment.members[1..] {
                let parent = tree.node(member.parent);
                assert!(parent.children().iter().any(|(_, c)| *c == member.node));
            }
        }
    }

    #[test]
    fn space_is_a_power_of_two_at_least_twice_the_total() {
        assert_eq!(space_for(0, 256), 256);
        assert_eq!(space_for(128, 256), 256);
        assert_eq!(space_for(129, 256), 512);
        assert_eq!(space_for(3000, 1024), 8192);
    }

    #[test]
    fn home_is_sha256_of_the_name_modulo_the_space() {
        // SHA-256("abc") starts ba7816bf 8f01cfea.
        assert_eq!(home(b"abc", 1 << 40), 0xba7816bf8f01cfea % (1 << 40));
        assert_eq!(home(b"abc", 256), 0xea);
    }

    #[test]
    fn place_puts_runs_at_homes_or_the_first_free_position_after() {
        let space = 1 << 16;
        let names: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("{i:02}-pkg").into_bytes())
            .collect();
        let runs: Vec<(&[u8], u64)> = names.iter().map(|n| (&n[..], 3)).collect();
        let placement = place(runs.iter().copied(), 10, space);
        let mut taken: Vec<(u64, u64)> = placement.starts.iter().map(|&s| (s, s + 3)).collect();
        taken.sort();
        assert!(taken.windows(2).all(|w| w[0].1 <= w[1].0), "runs overlap");
        assert!(taken[0].0 >= 10, "the skeleton's positions are taken");
        for ((name, _), &start) in runs.iter().zip(&placement.starts) {
            assert!(start >= home(name, space).max(10));
        }
        assert_eq!(placement.end, taken.iter().map(|r| r.1).max().unwrap());

        // Removing one store path and adding another leaves every other
        // run where it was, here where no home collides.
        let mut changed = runs[1..].to_vec();
        changed.push((b"zz-new", 3));
        let after = place(changed.iter().copied(), 10, space);
        assert_eq!(&after.starts[..39], &placement.starts[1..]);
    }

    #[test]
    fn place_moves_a_run_whose_home_is_taken() {
        // A space of 1: every home is 0. Ordered by name, each run after
        // the one before; the positions below first_free stay free.
        let placement = place([(b"b" as &[u8], 5), (b"a", 2), (b"c", 1)], 3, 1);
        assert_eq!(placement.starts, [5, 3, 10]);
        assert_eq!(placement.end, 11);
        // A home past the runs before it is kept, leaving a gap.
        let a: &[u8] = b"abc"; // home 0xea = 234 of 256
        let placement = place([(a, 30)], 100, 256);
        assert_eq!(placement.starts, [234]);
        assert_eq!(placement.end, 264);
    }
}
