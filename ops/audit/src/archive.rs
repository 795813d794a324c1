//! The portable archive of a log (`hotaru log export --archive`), for the committee to take
//! away and audit offline.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! "HOTARU-ARCHIVE\n" version(u8 = 1)
//! record*: tag(u8) body
//!   1 HEAD   context(u8) head(u64) head_hash(32)       the log's heads when exported
//!   2 FRAME  context(u8) position(u64) len(u32) frame  every stored frame, chain included
//!   3 DAYKEY day(u32) len(u32) bytes                   the day keys still held (to open
//!                                                      sealed keys; shredded days are gone)
//!   4 BLOB   name_len(u16) name len(u32) bytes         the published export zips
//!   0 END    sha256(32)                                 over every byte before this tag
//! ```
//!
//! Frames are copied byte for byte: the archive proves nothing by itself beyond the SHA-256
//! at its end; the audit re-checks the chain inside it and reports the heads, which the
//! committee compares with the running system's.

use std::io::{Read, Write};

use bytes::Bytes;
use hotaru_events::Context;
use hotaru_events::chain::ChainHash;
use hotaru_events::domain::Day;

const MAGIC: &[u8] = b"HOTARU-ARCHIVE\n";
const VERSION: u8 = 1;

const END: u8 = 0;
const HEAD: u8 = 1;
const FRAME: u8 = 2;
const DAYKEY: u8 = 3;
const BLOB: u8 = 4;

/// Writes an archive; call [`ArchiveWriter::finish`] at the end.
pub struct ArchiveWriter<W: Write> {
    out: W,
    sha: ring::digest::Context,
    bytes: u64,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W) -> std::io::Result<Self> {
        let mut w = Self {
            out,
            sha: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        };
        w.put(MAGIC)?;
        w.put(&[VERSION])?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sha.update(b);
        self.bytes += b.len() as u64;
        self.out.write_all(b)
    }

    pub fn head(&mut self, ctx: Context, head: u64, hash: ChainHash) -> std::io::Result<()> {
        self.put(&[HEAD, ctx as u8])?;
        self.put(&head.to_be_bytes())?;
        self.put(&hash.0)
    }

    pub fn frame(&mut self, ctx: Context, position: u64, frame: &[u8]) -> std::io::Result<()> {
        self.put(&[FRAME, ctx as u8])?;
        self.put(&position.to_be_bytes())?;
        self.put(&(frame.len() as u32).to_be_bytes())?;
        self.put(frame)
    }

    pub fn day_key(&mut self, day: Day, bytes: &[u8]) -> std::io::Result<()> {
        self.put(&[DAYKEY])?;
        self.put(&day.0.to_be_bytes())?;
        self.put(&(bytes.len() as u32).to_be_bytes())?;
        self.put(bytes)
    }

    pub fn blob(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.put(&[BLOB])?;
        self.put(&(name.len() as u16).to_be_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&(bytes.len() as u32).to_be_bytes())?;
        self.put(bytes)
    }

    /// Writes the trailer; returns the bytes written and the archive's SHA-256.
    pub fn finish(mut self) -> std::io::Result<(u64, [u8; 32])> {
        let sha: [u8; 32] = self
            .sha
            .clone()
            .finish()
            .as_ref()
            .try_into()
            .expect("32 bytes");
        self.out.write_all(&[END])?;
        self.out.write_all(&sha)?;
        self.out.flush()?;
        Ok((self.bytes + 33, sha))
    }
}

/// An archive read into memory.
#[derive(Default)]
pub struct Archive {
    pub heads: Vec<(Context, u64, ChainHash)>,
    /// Frames by context, in the order stored.
    pub frames: std::collections::BTreeMap<u8, Vec<(u64, Bytes)>>,
    pub day_keys: std::collections::BTreeMap<u32, Vec<u8>>,
    pub blobs: std::collections::HashMap<String, Vec<u8>>,
    /// Whether the trailer's SHA-256 matches the bytes (false: the file was changed).
    pub checksum_ok: bool,
    /// Whether the trailer was there at all (false: the file was cut short).
    pub complete: bool,
    pub bytes: u64,
    /// Where reading stopped on a record that does not parse (what came before is kept).
    pub damage: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a Hotaru archive")]
    NotAnArchive,
    #[error("archive version {0} is not supported")]
    Version(u8),
    #[error("the archive is malformed at byte {0}: {1}")]
    Malformed(u64, &'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

struct Cursor {
    data: Bytes,
    at: usize,
}

impl Cursor {
    fn take(&mut self, n: usize) -> Result<Bytes, ArchiveError> {
        if self.data.len() - self.at < n {
            return Err(ArchiveError::Malformed(self.at as u64, "cut short"));
        }
        let b = self.data.slice(self.at..self.at + n);
        self.at += n;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, ArchiveError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ArchiveError> {
        Ok(u16::from_be_bytes(self.take(2)?[..].try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, ArchiveError> {
        Ok(u32::from_be_bytes(self.take(4)?[..].try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, ArchiveError> {
        Ok(u64::from_be_bytes(self.take(8)?[..].try_into().expect("8")))
    }
}

impl Archive {
    pub fn read_file(path: &std::path::Path) -> Result<Self, ArchiveError> {
        let mut data = Vec::new();
        std::fs::File::open(path)?.read_to_end(&mut data)?;
        Self::parse(Bytes::from(data))
    }

    /// Parses an archive. Records after damage are still read where they parse, so that the
    /// audit can say where the damage is; a record that does not parse ends the reading.
    pub fn parse(data: Bytes) -> Result<Self, ArchiveError> {
        if !data.starts_with(MAGIC) {
            return Err(ArchiveError::NotAnArchive);
        }
        let mut c = Cursor {
            data: data.clone(),
            at: MAGIC.len(),
        };
        let v = c.u8()?;
        if v != VERSION {
            return Err(ArchiveError::Version(v));
        }
        let mut a = Archive {
            bytes: data.len() as u64,
            ..Default::default()
        };
        while c.at < data.len() {
            let start = c.at;
            if let Err(e) = a.record(&mut c, &data, start) {
                a.damage = Some(e.to_string());
                break;
            }
            if a.complete {
                break;
            }
        }
        Ok(a)
    }

    /// Reads one record at `start`.
    fn record(&mut self, c: &mut Cursor, data: &Bytes, start: usize) -> Result<(), ArchiveError> {
        let a = self;
        {
            match c.u8()? {
                END => {
                    let sha = c.take(32)?;
                    let actual = ring::digest::digest(&ring::digest::SHA256, &data[..start]);
                    a.checksum_ok = actual.as_ref() == &sha[..] && c.at == data.len();
                    a.complete = true;
                }
                HEAD => {
                    let ctx = context(c.u8()?, start)?;
                    let head = c.u64()?;
                    let hash = ChainHash(c.take(32)?[..].try_into().expect("32"));
                    a.heads.push((ctx, head, hash));
                }
                FRAME => {
                    let ctx = c.u8()?;
                    context(ctx, start)?;
                    let position = c.u64()?;
                    let len = c.u32()? as usize;
                    let frame = c.take(len)?;
                    a.frames.entry(ctx).or_default().push((position, frame));
                }
                DAYKEY => {
                    let day = c.u32()?;
                    let len = c.u32()? as usize;
                    a.day_keys.insert(day, c.take(len)?.to_vec());
                }
                BLOB => {
                    let n = c.u16()? as usize;
                    let name = String::from_utf8(c.take(n)?.to_vec())
                        .map_err(|_| ArchiveError::Malformed(start as u64, "blob name"))?;
                    let len = c.u32()? as usize;
                    a.blobs.insert(name, c.take(len)?.to_vec());
                }
                _ => return Err(ArchiveError::Malformed(start as u64, "unknown record")),
            }
        }
        Ok(())
    }
}

fn context(b: u8, at: usize) -> Result<Context, ArchiveError> {
    Context::ALL
        .iter()
        .copied()
        .find(|c| *c as u8 == b)
        .ok_or(ArchiveError::Malformed(at as u64, "unknown context"))
}
