//! Every element count in a broker's response checked against the bytes that follow it, before
//! `kafka-protocol` decodes the response.
//!
//! Its decoders size each array with `Vec::with_capacity(count)` from the count on the wire, so
//! eleven bytes claiming two billion brokers ask for hundreds of gigabytes and abort the whole
//! server: found by `fuzz/fuzz_targets/kafka.rs`, reported upstream
//! (kafka-protocol-rs/kafka-protocol-rs#152, #161, #200, open at 0.18.0). Each element takes
//! at least one byte, so a count above the bytes left is never a real answer. This walks the
//! response by the schema of the versions `wanted` asks for (transcribed from the crate's
//! generated decoders: field order, the versions a field is present in, compact encodings and
//! tagged fields from the message's first flexible version), exactly as the decoder will read
//! it, so the decoder only ever sees counts that fit.

use kafka_protocol::messages::ApiKey;

/// How a field is laid out on the wire.
#[derive(Clone, Copy)]
enum T {
    /// A fixed number of bytes (integers, booleans, UUIDs).
    Fixed(usize),
    /// A (nullable) string: `i16` length, or an unsigned varint length + 1 when flexible.
    Str,
    /// (Nullable) bytes: `i32` length, or an unsigned varint length + 1 when flexible.
    Bytes,
    /// An array of structs: `i32` count, or an unsigned varint count + 1 when flexible.
    Array(&'static S),
    /// An array of fixed-size items.
    Items(usize),
    /// An array of strings.
    Strs,
    /// A struct on its own (only as a tagged field).
    Struct(&'static S),
}

/// A field present in versions `lo..=hi`.
struct F {
    lo: i16,
    hi: i16,
    t: T,
}

/// A struct: its fields, then (when flexible) its tagged fields, of which `tags` are the ones
/// the decoder reads by their schema rather than skipping `size` bytes.
struct S {
    fields: &'static [F],
    tags: &'static [(u32, T)],
}

const ANY: i16 = i16::MAX;
const I16: T = T::Fixed(2);
const I32: T = T::Fixed(4);
const I64: T = T::Fixed(8);
const UUID: T = T::Fixed(16);
const BOOL: T = T::Fixed(1);

const fn all(t: T) -> F {
    F { lo: 0, hi: ANY, t }
}
const fn from(lo: i16, t: T) -> F {
    F { lo, hi: ANY, t }
}
const fn until(hi: i16, t: T) -> F {
    F { lo: 0, hi, t }
}
const fn plain(fields: &'static [F]) -> S {
    S { fields, tags: &[] }
}

const API_VERSION: S = plain(&[all(I16), all(I16), all(I16)]);
const API_VERSIONS: S = plain(&[all(I16), all(T::Array(&API_VERSION)), from(1, I32)]);

const META_BROKER: S = plain(&[all(I32), all(T::Str), all(I32), from(1, T::Str)]);
const META_PARTITION: S = plain(&[
    all(I16),
    all(I32),
    all(I32),
    from(7, I32),
    all(T::Items(4)),
    all(T::Items(4)),
    from(5, T::Items(4)),
]);
const META_TOPIC: S = plain(&[
    all(I16),
    all(T::Str),
    from(10, UUID),
    from(1, BOOL),
    all(T::Array(&META_PARTITION)),
    from(8, I32),
]);
const METADATA: S = plain(&[
    from(3, I32),
    all(T::Array(&META_BROKER)),
    from(2, T::Str),
    from(1, I32),
    all(T::Array(&META_TOPIC)),
    F {
        lo: 8,
        hi: 10,
        t: I32,
    },
    from(13, I16),
]);

const ABORTED: S = plain(&[all(I64), all(I64)]);
const EPOCH_END_OFFSET: S = plain(&[from(12, I32), from(12, I64)]);
const LEADER: S = plain(&[from(12, I32), from(12, I32)]);
const SNAPSHOT: S = plain(&[all(I64), all(I32)]);
const FETCH_PARTITION: S = S {
    fields: &[
        all(I32),
        all(I16),
        all(I64),
        all(I64),
        from(5, I64),
        all(T::Array(&ABORTED)),
        from(11, I32),
        all(T::Bytes),
    ],
    tags: &[
        (0, T::Struct(&EPOCH_END_OFFSET)),
        (1, T::Struct(&LEADER)),
        (2, T::Struct(&SNAPSHOT)),
    ],
};
const FETCH_TOPIC: S = plain(&[
    until(12, T::Str),
    from(13, UUID),
    all(T::Array(&FETCH_PARTITION)),
]);
// Tag 0 (node endpoints) is refused by the decoder before v16, beyond the versions asked for.
const FETCH: S = plain(&[
    all(I32),
    from(7, I16),
    from(7, I32),
    all(T::Array(&FETCH_TOPIC)),
]);

const LIST_PARTITION: S = plain(&[all(I32), all(I16), all(I64), all(I64), from(4, I32)]);
const LIST_TOPIC: S = plain(&[all(T::Str), all(T::Array(&LIST_PARTITION))]);
const LIST_OFFSETS: S = plain(&[from(2, I32), all(T::Array(&LIST_TOPIC))]);

const COMMIT_PARTITION: S = plain(&[all(I32), all(I16)]);
const COMMIT_TOPIC: S = plain(&[
    until(9, T::Str),
    from(10, UUID),
    all(T::Array(&COMMIT_PARTITION)),
]);
const OFFSET_COMMIT: S = plain(&[from(3, I32), all(T::Array(&COMMIT_TOPIC))]);

const FETCHED_PARTITION: S = plain(&[
    until(7, I32),
    until(7, I64),
    F {
        lo: 5,
        hi: 7,
        t: I32,
    },
    until(7, T::Str),
    until(7, I16),
]);
const FETCHED_TOPIC: S = plain(&[until(7, T::Str), until(7, T::Array(&FETCHED_PARTITION))]);
// Groups (v8+) are beyond the versions asked for.
const OFFSET_FETCH: S = plain(&[
    from(3, I32),
    until(7, T::Array(&FETCHED_TOPIC)),
    F {
        lo: 2,
        hi: 7,
        t: I16,
    },
]);

// Coordinators (v4+) are beyond the versions asked for.
const FIND_COORDINATOR: S = plain(&[
    from(1, I32),
    until(3, I16),
    F {
        lo: 1,
        hi: 3,
        t: T::Str,
    },
    until(3, I32),
    until(3, T::Str),
    until(3, I32),
]);

const BATCH_ERROR: S = plain(&[from(8, I32), from(8, T::Str)]);
// The partition's tag 0 (current leader) is refused by the decoder before v10.
const PRODUCE_PARTITION: S = plain(&[
    all(I32),
    all(I16),
    all(I64),
    all(I64),
    from(5, I64),
    from(8, T::Array(&BATCH_ERROR)),
    from(8, T::Str),
]);
const PRODUCE_TOPIC: S = plain(&[
    until(12, T::Str),
    from(13, UUID),
    all(T::Array(&PRODUCE_PARTITION)),
]);
const PRODUCE: S = plain(&[all(T::Array(&PRODUCE_TOPIC)), all(I32)]);

const SASL_HANDSHAKE: S = plain(&[all(I16), all(T::Strs)]);
const SASL_AUTHENTICATE: S = plain(&[all(I16), all(T::Str), all(T::Bytes), from(1, I64)]);

/// The response schema of `api` and the first version it is flexible in.
fn schema(api: ApiKey) -> Option<(&'static S, i16)> {
    Some(match api {
        ApiKey::ApiVersions => (&API_VERSIONS, 3),
        ApiKey::Metadata => (&METADATA, 9),
        ApiKey::Fetch => (&FETCH, 12),
        ApiKey::ListOffsets => (&LIST_OFFSETS, 6),
        ApiKey::OffsetCommit => (&OFFSET_COMMIT, 8),
        ApiKey::OffsetFetch => (&OFFSET_FETCH, 6),
        ApiKey::FindCoordinator => (&FIND_COORDINATOR, 3),
        ApiKey::Produce => (&PRODUCE, 9),
        ApiKey::SaslHandshake => (&SASL_HANDSHAKE, ANY),
        ApiKey::SaslAuthenticate => (&SASL_AUTHENTICATE, 2),
        _ => return None,
    })
}

/// `Err` with the reason when `body` (a response of `api` at `version`, after its header)
/// holds a count larger than what follows it, or is cut before one.
pub fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
    walk(api, version, body).map(|_| ())
}

/// The walk of `check`, and how many bytes it left unread.
fn walk(api: ApiKey, version: i16, body: &[u8]) -> Result<usize, String> {
    let (lo, hi) = super::wanted(api);
    let Some((s, flexible)) = schema(api).filter(|_| (lo..=hi).contains(&version)) else {
        return Err(format!("no schema for {api:?} v{version}"));
    };
    let mut w = Walk {
        b: body,
        version,
        flexible: version >= flexible,
    };
    w.strukt(s)?;
    Ok(w.b.len())
}

struct Walk<'a> {
    b: &'a [u8],
    version: i16,
    flexible: bool,
}

impl Walk<'_> {
    fn skip(&mut self, n: usize) -> Result<(), String> {
        if n > self.b.len() {
            return Err(format!("{n} bytes announced, {} left", self.b.len()));
        }
        self.b = &self.b[n..];
        Ok(())
    }

    fn int(&mut self, n: usize) -> Result<i64, String> {
        let Some(bytes) = self.b.get(..n) else {
            return Err("cut short".into());
        };
        let v = bytes.iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
        self.b = &self.b[n..];
        // Sign-extend from n bytes.
        let shift = 64 - 8 * n as u32;
        Ok(((v << shift) as i64) >> shift)
    }

    /// An unsigned varint exactly as the decoder reads one: at most five bytes, whatever the
    /// fifth says, bits past 32 dropped (a different value here would walk a different frame).
    fn uvarint(&mut self) -> Result<u64, String> {
        let mut v = 0u32;
        for i in 0..5 {
            let Some((&b, rest)) = self.b.split_first() else {
                return Err("cut short".into());
            };
            self.b = rest;
            v |= u32::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                break;
            }
        }
        Ok(u64::from(v))
    }

    /// A length or count: `None` for null. Non-flexible lengths are `width` bytes wide.
    fn len(&mut self, width: usize) -> Result<Option<usize>, String> {
        if self.flexible {
            let n = self.uvarint()?;
            Ok(n.checked_sub(1).map(|n| n as usize))
        } else {
            let n = self.int(width)?;
            Ok(usize::try_from(n).ok())
        }
    }

    /// An element count, refused when more elements than bytes follow.
    fn count(&mut self) -> Result<usize, String> {
        let n = self.len(4)?.unwrap_or(0);
        if n > self.b.len() {
            return Err(format!(
                "{n} elements announced, {} bytes left",
                self.b.len()
            ));
        }
        Ok(n)
    }

    fn field(&mut self, t: T) -> Result<(), String> {
        match t {
            T::Fixed(n) => self.skip(n),
            T::Str => {
                let n = self.len(2)?.unwrap_or(0);
                self.skip(n)
            }
            T::Bytes => {
                let n = self.len(4)?.unwrap_or(0);
                self.skip(n)
            }
            T::Array(s) => (0..self.count()?).try_for_each(|_| self.strukt(s)),
            T::Items(size) => {
                let n = self.count()?;
                self.skip(n.saturating_mul(size))
            }
            T::Strs => (0..self.count()?).try_for_each(|_| self.field(T::Str)),
            T::Struct(s) => self.strukt(s),
        }
    }

    fn strukt(&mut self, s: &S) -> Result<(), String> {
        for f in s.fields {
            if (f.lo..=f.hi).contains(&self.version) {
                self.field(f.t)?;
            }
        }
        if self.flexible {
            for _ in 0..self.uvarint()? {
                let tag = self.uvarint()?;
                let size = self.uvarint()? as usize;
                match s.tags.iter().find(|(t, _)| u64::from(*t) == tag) {
                    Some(&(_, t)) => self.field(t)?,
                    None => self.skip(size)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
