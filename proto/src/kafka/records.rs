//! A fetch's record batches, cut at their length fields and decoded (checksum checked,
//! decompressed), and the one-record batch a dead letter is produced as.
//!
//! A broker fills a fetch up to the bytes asked for, so its last batch may be cut short: that
//! one is left for the next fetch, which starts at the first offset not taken. A compressed
//! batch may begin before the offset asked for; its older records are dropped here.
//!
//! `kafka-protocol` reserves room for a batch's record count and each record's header count
//! as the wire states them, and inflates gzip without a limit: both are bounded here before it
//! decodes (decompression is done here, capped at `MAX_INFLATED`, and the records are walked
//! for their counts), so a damaged or hostile batch is an error, not an abort.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Decompressor, Snappy};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, Record,
    RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{KafkaError, MAX_FRAME};

/// The most a compressed batch may inflate to (Kafka's default `max.message.bytes` is 1 MiB).
pub const MAX_INFLATED: usize = 256 << 20;

/// Where a v2 batch's record count sits, and where its records start.
const RECORD_COUNT_AT: usize = 57;
const RECORDS_AT: usize = 61;

/// One record of a partition: its offset and value (keys and headers are not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    /// Its place in the partition.
    pub offset: i64,
    /// The producer's bytes (`None`: a tombstone).
    pub value: Option<Bytes>,
}

/// The records of one partition's fetched bytes at or after `from`, and the offset the next
/// fetch starts at (past every whole batch, control batches included).
pub fn decode(mut bytes: Bytes, from: i64) -> Result<(Vec<Rec>, i64), KafkaError> {
    // baseOffset (8) + batchLength (4); the length counts what follows it.
    const HEAD: usize = 12;
    let mut out = Vec::new();
    let mut next = from;
    while bytes.len() >= HEAD {
        let base = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if len < 0 || len as usize > MAX_FRAME {
            return Err(KafkaError::Malformed {
                what: "record batch",
                reason: format!("length {len}"),
            });
        }
        let whole = HEAD + len as usize;
        if bytes.len() < whole {
            break; // cut by the fetch's size limit: fetched again next time
        }
        let mut batch = bytes.split_to(whole);
        let Some(count) = batch.get(RECORD_COUNT_AT..RECORDS_AT) else {
            return Err(KafkaError::Malformed {
                what: "record batch",
                reason: format!("{whole} bytes, shorter than a batch header"),
            });
        };
        let count = i32::from_be_bytes(count.try_into().expect("4 bytes"));
        let inflate = |records: &mut Bytes, c: Compression| -> anyhow::Result<Bytes> {
            let records = inflate(records, c)?;
            walk(&records, count).map_err(anyhow::Error::msg)?;
            Ok(records)
        };
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut batch, Some(&inflate))
            .map_err(|e| KafkaError::Malformed {
                what: "record batch",
                reason: e.to_string(),
            })?;
        let last = match set.records.last() {
            Some(r) => r.offset,
            None => base,
        };
        next = next.max(last + 1).max(base + 1);
        out.extend(
            set.records
                .into_iter()
                .filter(|r| !r.control && r.offset >= from)
                .map(|r| Rec {
                    offset: r.offset,
                    value: r.value,
                }),
        );
    }
    Ok((out, next))
}

/// A batch's records, decompressed, at most `MAX_INFLATED` bytes.
fn inflate(records: &mut Bytes, c: Compression) -> anyhow::Result<Bytes> {
    let out = match c {
        Compression::None => return Ok(records.clone()),
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&records[..])
                .take(MAX_INFLATED as u64 + 1)
                .read_to_end(&mut out)?;
            Bytes::from(out)
        }
        // Snappy states each block's length; the block is refused when it is not that long.
        Compression::Snappy => Snappy::decompress(records, |b: &mut Bytes| Ok(b.clone()))?,
        other => anyhow::bail!("{other:?} compression is not supported (gzip and snappy are)"),
    };
    if out.len() > MAX_INFLATED {
        anyhow::bail!("inflates past {MAX_INFLATED} bytes");
    }
    Ok(out)
}

/// `Err` when the batch claims more records than it has bytes, or a record more headers.
fn walk(mut b: &[u8], count: i32) -> Result<(), String> {
    let count = usize::try_from(count).map_err(|_| format!("{count} records"))?;
    if count > b.len() {
        return Err(format!("{count} records announced in {} bytes", b.len()));
    }
    for _ in 0..count {
        let size = usize::try_from(varint(&mut b, false)?).map_err(|_| "negative record size")?;
        let Some(record) = b.get(..size) else {
            return Err(format!("a record of {size} bytes, {} left", b.len()));
        };
        b = &b[size..];
        let mut r = record.get(1..).ok_or("an empty record")?; // attributes
        varint(&mut r, true)?; // timestamp delta
        varint(&mut r, false)?; // offset delta
        for _ in 0..2 {
            // key, value (-1: null)
            let n = varint(&mut r, false)?;
            let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
            r = r.get(n..).ok_or("a key or value past its record")?;
        }
        let headers = varint(&mut r, false)?;
        if headers < 0 || headers as usize > r.len() {
            return Err(format!("{headers} headers announced in {} bytes", r.len()));
        }
    }
    Ok(())
}

/// A zig-zag varint exactly as the decoder reads one (`wide`: a varlong, ten bytes and 64
/// bits; else five bytes and 32, whatever the last byte says).
fn varint(b: &mut &[u8], wide: bool) -> Result<i64, String> {
    let (bytes, bits) = if wide { (10, 64) } else { (5, 32) };
    let mut v = 0u64;
    for i in 0..bytes {
        let (&byte, rest) = b.split_first().ok_or("a record cut short")?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            break;
        }
    }
    if bits == 32 {
        let v = v as u32;
        return Ok(i64::from((v >> 1) as i32 ^ -((v & 1) as i32)));
    }
    Ok((v >> 1) as i64 ^ -((v & 1) as i64))
}

/// A batch of one record holding `value`, with headers `reason` and `source` (where it was
/// read), for the dead-letter topic.
pub fn dead_letter(
    value: Option<Bytes>,
    reason: &str,
    source: &str,
    now_ms: i64,
) -> Result<Bytes, KafkaError> {
    let mut headers = IndexMap::new();
    headers.insert(
        StrBytes::from_static_str("reason"),
        Some(Bytes::from(reason.to_string())),
    );
    headers.insert(
        StrBytes::from_static_str("source"),
        Some(Bytes::from(source.to_string())),
    );
    let record = record(0, value, headers, now_ms);
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| KafkaError::Malformed {
        what: "dead-letter batch",
        reason: e.to_string(),
    })?;
    Ok(buf.freeze())
}

fn record(
    offset: i64,
    value: Option<Bytes>,
    headers: IndexMap<StrBytes, Option<Bytes>>,
    timestamp: i64,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: NO_SEQUENCE,
        timestamp,
        key: None,
        value,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, values: &[&str], compression: Compression) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let value = Some(Bytes::from(v.to_string()));
                record(base + i as i64, value, IndexMap::new(), 0)
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn values(recs: &[Rec]) -> Vec<(i64, String)> {
        recs.iter()
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into(),
                )
            })
            .collect()
    }

    #[test]
    fn whole_batches_are_read_and_a_cut_one_is_left_for_the_next_fetch() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&batch(10, &["a", "b"], Compression::None));
        wire.extend_from_slice(&batch(12, &["c"], Compression::Gzip));
        let third = batch(13, &["d"], Compression::Snappy);
        wire.extend_from_slice(&third[..third.len() - 3]);
        let (recs, next) = decode(wire.freeze(), 10).unwrap();
        assert_eq!(
            values(&recs),
            [(10, "a".into()), (11, "b".into()), (12, "c".into())]
        );
        assert_eq!(next, 13);
        let (recs, next) = decode(third, next).unwrap();
        assert_eq!(values(&recs), [(13, "d".into())]);
        assert_eq!(next, 14);
    }

    #[test]
    fn records_before_the_offset_asked_for_are_dropped() {
        let (recs, next) = decode(batch(0, &["a", "b", "c"], Compression::Gzip), 2).unwrap();
        assert_eq!(values(&recs), [(2, "c".into())]);
        assert_eq!(next, 3);
    }

    #[test]
    fn a_damaged_batch_is_an_error_not_a_panic() {
        let mut b = batch(0, &["a"], Compression::None).to_vec();
        let n = b.len();
        b[n - 1] ^= 0xff; // the checksum no longer matches
        assert!(decode(Bytes::from(b), 0).is_err());
        let mut b = batch(0, &["a"], Compression::None).to_vec();
        b[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(decode(Bytes::from(b), 0).is_err());
        assert_eq!(decode(Bytes::new(), 7).unwrap(), (vec![], 7));
    }

    /// `b` with its checksum made right again after an edit.
    fn resealed(mut b: Vec<u8>) -> Bytes {
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn counts_past_the_batch_are_refused_before_anything_is_reserved() {
        let good = batch(0, &["a"], Compression::None).to_vec();
        assert_eq!(decode(resealed(good.clone()), 0).unwrap().0.len(), 1);
        let mut b = good.clone();
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let e = decode(resealed(b), 0).unwrap_err().to_string();
        assert!(e.contains("2147483647 records announced"), "{e}");
        // The record's header count (its last byte, 0) made 2^30, a five-byte zig-zag varint:
        // the record and the batch grow by four bytes.
        let mut b = good;
        b.pop();
        b.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[61] += 8; // the record's size, zig-zag encoded
        let e = decode(resealed(b), 0).unwrap_err().to_string();
        assert!(e.contains("1073741824 headers announced"), "{e}");
        // A gzip batch's records inflate as the others do.
        let (recs, _) = decode(batch(5, &["x"; 3], Compression::Gzip), 5).unwrap();
        assert_eq!(recs.len(), 3);
    }

    #[test]
    fn a_dead_letter_carries_its_reason() {
        let mut b = dead_letter(Some(Bytes::from_static(b"{x")), "bad json", "t/0@5", 1).unwrap();
        let set = RecordBatchDecoder::decode(&mut b).unwrap();
        let r = &set.records[0];
        assert_eq!(r.value.as_deref(), Some(&b"{x"[..]));
        assert_eq!(
            r.headers.get(&StrBytes::from_static_str("reason")),
            Some(&Some(Bytes::from_static(b"bad json")))
        );
    }
}
