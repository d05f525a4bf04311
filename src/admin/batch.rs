//! A publish batch's body split into its items, bounded: a JSON array or NDJSON holding more
//! than `MAX_BATCH_ITEMS` items is refused before any item is looked at, so one request can
//! cost neither an unbounded list of item slices nor an unbounded answer (one result per item).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Items one `POST /publish` batch may hold. 1,000 answers stay under ~150 KB, and a backend
/// that has more sends several requests (each one lock round on the shards).
pub const MAX_BATCH_ITEMS: usize = 1000;

/// Why a batch body was refused: the status and the words for its `error`.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Not a JSON array of values (400).
    Invalid(String),
    /// More items than `MAX_BATCH_ITEMS` (413).
    TooMany,
}

impl BatchError {
    pub fn status(&self) -> u16 {
        match self {
            BatchError::Invalid(_) => 400,
            BatchError::TooMany => 413,
        }
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Invalid(e) => write!(f, "invalid publish batch: {e}"),
            BatchError::TooMany => write!(
                f,
                "a publish batch holds at most {MAX_BATCH_ITEMS} items: split it into several requests"
            ),
        }
    }
}

/// The items of an NDJSON body (blank lines skipped).
pub fn ndjson(body: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    let mut items = Vec::new();
    for line in body.split(|&b| b == b'\n') {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if items.len() == MAX_BATCH_ITEMS {
            return Err(BatchError::TooMany);
        }
        items.push(line);
    }
    Ok(items)
}

/// The items of a JSON array body, each as its raw JSON text.
pub fn array(body: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let items = Bounded.deserialize(&mut de).map_err(|e| {
        if e.to_string().starts_with(TOO_MANY) {
            BatchError::TooMany
        } else {
            BatchError::Invalid(e.to_string())
        }
    })?;
    de.end().map_err(|e| BatchError::Invalid(e.to_string()))?;
    Ok(items.into_iter().map(|r| r.get().as_bytes()).collect())
}

const TOO_MANY: &str = "too many items";

/// Reads an array's elements, stopping at the first one past the cap.
struct Bounded;

impl<'de> DeserializeSeed<'de> for Bounded {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of publish objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == MAX_BATCH_ITEMS {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_capped_before_their_items_are_kept() {
        let ok = "1\n".repeat(MAX_BATCH_ITEMS);
        assert_eq!(ndjson(ok.as_bytes()).unwrap().len(), MAX_BATCH_ITEMS);
        let over = "1\n".repeat(MAX_BATCH_ITEMS + 1);
        assert_eq!(ndjson(over.as_bytes()), Err(BatchError::TooMany));
        let arr = |n: usize| format!("[{}]", vec!["0"; n].join(","));
        assert_eq!(
            array(arr(MAX_BATCH_ITEMS).as_bytes()).unwrap().len(),
            MAX_BATCH_ITEMS
        );
        assert_eq!(array(arr(524_288).as_bytes()), Err(BatchError::TooMany));
        assert!(matches!(array(b"[1,"), Err(BatchError::Invalid(_))));
        assert!(matches!(array(b"[1] x"), Err(BatchError::Invalid(_))));
        assert_eq!(
            array(br#"[{"a":1}, 2]"#).unwrap(),
            vec![&b"{\"a\":1}"[..], b"2"]
        );
        assert_eq!(ndjson(b"\n \n{}\n").unwrap(), vec![&b"{}"[..]]);
    }
}
